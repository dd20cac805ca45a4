"""``python -m benchmarks [--suite ...] [--size ...] [--out ...]``: the ``jaxbasics bench`` command."""

import argparse
import sys

from jaxbasics.cli.bench import add_arguments, cmd_bench

parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
add_arguments(parser)
sys.exit(cmd_bench(parser.parse_args()))
