"""Command line: ``jaxbasics tour | compare | graph | train | generate | bench``.

Each subcommand's heavy imports happen inside its handler so ``jaxbasics --help`` is quick
and ``compare`` can explain a missing PyTorch instead of failing at import.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def _cmd_tour(args: argparse.Namespace) -> int:
    from jaxbasics.cli.tour import print_tour, run_tour

    result = run_tour(seed=args.seed)
    if args.graph_out is not None:
        from jaxbasics.cli.graph import write

        try:
            result["graph"]["picture"] = write("neuron", args.graph_out)
        except (ImportError, ValueError) as err:
            print(f"jaxbasics tour: --graph-out: {err}", file=sys.stderr)
            return 3 if isinstance(err, ImportError) else 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_tour(result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxbasics`` argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="jaxbasics",
        description="The basic LLM concepts (tensors, autodiff, backprop, SimpleNet, GPT-2) "
                    "the JAX way: pure functions, jax.grad, jax.jit, Flax NNX, Optax.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    tour = sub.add_parser("tour", help="walk the chapter section by section, computing every "
                                       "number (tensors → autodiff → graph → backprop → GPT-2)",
                          description="Walk the chapter: tensors, the single-neuron gradient "
                                      "(jax.grad vs hand formula vs finite differences), its "
                                      "jaxpr, SimpleNet backprop and one SGD step, GPT-2 config.")
    tour.add_argument("--json", action="store_true", help="print all values as JSON instead")
    tour.add_argument("--seed", type=int, default=0, help="seed for SimpleNet (default 0)")
    tour.add_argument("--graph-out", type=Path, default=None, metavar="DIR",
                      help="also draw section 3's graph beside PyTorch's (jaxbasics graph) "
                           "into DIR")
    tour.set_defaults(func=_cmd_tour)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands():
    """Registration functions of the other subcommands (each module adds its own parser)."""
    registrations = []
    for module_name in ("jaxbasics.cli.compare", "jaxbasics.cli.graph", "jaxbasics.cli.gpt",
                        "jaxbasics.cli.data", "jaxbasics.cli.bench"):
        try:
            module = __import__(module_name, fromlist=["register"])
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                continue
            raise
        registrations.append(module.register)
    return registrations


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxbasics`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # before a command's own handling (imports, compiling): no traceback
        print(f"jaxbasics {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
