import sys

from jaxbasics.cli import main

sys.exit(main())
