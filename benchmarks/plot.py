"""Draw PNG charts from benchmark results JSON:
``python benchmarks/plot.py RESULTS.json [MORE.json ...] OUT_DIR [--merged MERGED.json]``.

Several files from one machine (a GPT-2 run split by ``--variants``) are joined first
(:func:`jaxbasics.bench.results.merge_results`); ``--merged`` also writes the joined JSON."""

import argparse
from pathlib import Path

from jaxbasics.bench.plot import plot_results
from jaxbasics.bench.results import merge_results, read_json, write_json

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("results", type=Path, nargs="+")
parser.add_argument("out_dir", type=Path)
parser.add_argument("--merged", type=Path, default=None, help="write the joined results here")
args = parser.parse_args()
try:
    result = merge_results([read_json(p) for p in args.results])
except ValueError as err:
    parser.error(str(err))
try:
    if args.merged:
        print(write_json(result, args.merged))
    for path in plot_results(result, args.out_dir):
        print(path)
except OSError as err:
    parser.error(f"cannot write {err.filename}: {err.strerror}")
