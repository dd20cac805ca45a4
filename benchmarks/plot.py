"""Draw PNG charts from a benchmark results JSON: ``python benchmarks/plot.py RESULTS.json OUT_DIR``."""

import argparse
import json
from pathlib import Path

from jaxbasics.bench.plot import plot_results

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("results", type=Path)
parser.add_argument("out_dir", type=Path)
args = parser.parse_args()
for path in plot_results(json.loads(args.results.read_text()), args.out_dir):
    print(path)
