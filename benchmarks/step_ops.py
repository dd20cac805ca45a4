"""Where a training update's time goes, op by op (:mod:`jaxbasics.bench.ops`):
``python benchmarks/step_ops.py [--size smoke|cpu] [--calls N] [--top N] [--json OUT]``."""

import argparse
import json
from pathlib import Path

from jaxbasics.bench.ops import SIZES, profile_update

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--size", choices=list(SIZES), default="cpu")
parser.add_argument("--calls", type=int, default=2, help="profiled calls of 4 updates each")
parser.add_argument("--top", type=int, default=25, help="ops shown, largest first")
parser.add_argument("--json", type=Path, default=None, help="write every op's row here")
args = parser.parse_args()
for value, name in ((args.calls, "--calls"), (args.top, "--top")):
    if value < 1:
        parser.error(f"{name} must be at least 1, got {value}")
result = profile_update(args.size, args.calls)
from jaxbasics.bench.device import cpu_model  # noqa: E402 (after the run: JAX is imported)

result["cpu_model"] = cpu_model()
print(f"{args.size}: {result['config']}, {result['cpu_model']}")
print(f"wall {result['wall_ms_per_update']:.1f} ms an update; ops ran for "
      f"{result['busy_ms_per_update']:.1f} ms of it, none for {result['idle_ms_per_update']:.1f}")
print(f"{'ms':>8} {'share':>6} {'events':>6}  {'op':28} {'shape':28} JAX op_name")
for row in result["ops"][:args.top]:
    print(f"{row['ms']:8.2f} {row['share']:6.1%} {row['events']:6.2g}  {row['op'][:28]:28} "
          f"{row['shape'][:28]:28} {row['op_name'][-80:]}")
if args.json:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(args.json)
