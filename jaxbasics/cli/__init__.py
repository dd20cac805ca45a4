"""Command line: ``jaxbasics tour | compare | graph | train | generate | prepare | eval |
bench``.

Each subcommand's heavy imports happen inside its handler so ``jaxbasics --help`` is quick
and ``compare`` can explain a missing PyTorch instead of failing at import.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxbasics`` argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="jaxbasics",
        description="The basic LLM concepts (tensors, autodiff, backprop, SimpleNet, GPT-2) "
                    "the JAX way: pure functions, jax.grad, jax.jit, Flax NNX, Optax.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands():
    """Registration functions of the subcommands (each module adds its own parser)."""
    registrations = []
    for module_name in ("jaxbasics.cli.tour", "jaxbasics.cli.compare", "jaxbasics.cli.graph",
                        "jaxbasics.cli.gpt", "jaxbasics.cli.data", "jaxbasics.cli.bench"):
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
