"""Where a training update's time goes, op by op (:mod:`jaxbasics.bench.ops`):
``python benchmarks/step_ops.py [--size smoke|cpu] [--calls N] [--top N] [--json OUT]``."""

import argparse
import json
from pathlib import Path

from jaxbasics.bench.device import cpu_model
from jaxbasics.bench.ops import SIZES, parts, profile_update

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
result["cpu_model"] = cpu_model()
print(f"{args.size}: {result['config']}, {result['cpu_model']}")
print(f"{result['wall_ms_per_update']:.1f} ms an update (the profiled calls' wall time); some op "
      f"ran for {result['busy_ms_per_update']:.1f} ms of it, none for "
      f"{result['idle_ms_per_update']:.1f} ms between the first op and the last")
result["parts_ms"] = parts(result)
print("by part (jaxbasics.bench.ops.part_of): " + ", ".join(
    f"{name} {ms:.1f} ms ({ms / result['busy_ms_per_update']:.0%})"
    for name, ms in result["parts_ms"].items()))
print("ms: an op's wall share an update (time two ops ran at once is halved between them); "
      "share: of the ops' time; events: runs an update (one per layer inside a layer scan)")
print(f"{'ms':>8} {'share':>6} {'events':>6}  {'op':28} {'shape':28} JAX op_name (its end)")
for row in result["ops"][:args.top]:
    name = row["op_name"]
    name = name if len(name) <= 80 else "…" + name[-79:]
    print(f"{row['ms']:8.2f} {row['share']:6.1%} {row['events']:6.2g}  {row['op'][:28]:28} "
          f"{row['shape'][:28]:28} {name}")
if args.json:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(args.json)
