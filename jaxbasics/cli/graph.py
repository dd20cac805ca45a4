"""``jaxbasics graph``: the computational graphs of the chapter's examples, PyTorch's autograd
tape beside JAX's programs, as a picture (PNG, SVG) and as text (Graphviz DOT, Mermaid)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from jaxbasics.cli.help import DefaultsFormatter
from jaxbasics.compare import MissingTorchError, require_torch

MODELS = ("neuron", "simplenet")  # those of jaxbasics.compare.torch_graph.side_by_side


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``graph`` subcommand to the ``jaxbasics`` parser."""
    p = sub.add_parser(
        "graph", help="draw the computational graphs: PyTorch's autograd tape beside JAX's "
                      "jaxprs of the loss and of its gradient",
        description="Draw the single neuron's (or SimpleNet's) computational graph both ways, "
                    "from the real objects: the autograd graph loss.backward() walks "
                    "(loss.grad_fn and its next_functions) and the jaxprs of the loss and of "
                    "jax.grad of it, the reverse sweep in red; values where known. Writes "
                    "MODEL.png, MODEL.svg, MODEL.dot (Graphviz) and MODEL.mmd (Mermaid). "
                    "Needs the 'compare' extra (PyTorch, matplotlib).",
        formatter_class=DefaultsFormatter)
    p.add_argument("--model", choices=MODELS, default="neuron",
                   help="the chapter's single neuron, or SimpleNet (the example tour and compare "
                        "show for seed 0)")
    p.add_argument("--out", type=Path, default=Path("graphs"), help="folder for the files")
    p.add_argument("--full", action="store_true",
                   help="draw every JAX equation as its own node (SimpleNet collapses chains)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=_cmd_graph)


def write(model: str, out: Path, *, full: bool = False) -> dict[str, Any]:
    """:func:`jaxbasics.compare.torch_graph.side_by_side` after checking that PyTorch and
    matplotlib are there and ``out`` can be written (``MissingTorchError``, ``ImportError``,
    ``ValueError``)."""
    require_torch()
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ImportError("the picture needs matplotlib: python -m pip install -e "
                          "\".[compare]\"") from err
    from jaxbasics.cli.paths import require_writable

    require_writable(out, "--out", is_dir=True)
    from jaxbasics.compare.torch_graph import side_by_side

    return side_by_side(model, out, collapse=False if full else None)


def _cmd_graph(args: argparse.Namespace) -> int:
    try:
        result = write(args.model, args.out, full=args.full)
    except (MissingTorchError, ImportError, ValueError) as err:
        print(f"jaxbasics graph: {err}", file=sys.stderr)
        return 3 if isinstance(err, ImportError) else 2
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    n, d = result["nodes"], result["drawn_nodes"]
    e = result["equations"]
    print(f"{args.model}: PyTorch's autograd graph {e['torch']} backward nodes ({n['torch']} "
          f"nodes with the loss and parameters); JAX's forward jaxpr {e['jax_forward']} "
          f"equations ({n['jax_forward']} nodes), its gradient's {e['jax_grad']} equations "
          f"({n['jax_grad']} nodes), counted as jaxbasics tour counts them"
          + (f" (drawn as {d['jax_forward']} and {d['jax_grad']} nodes: chains collapsed; "
             f"--full draws all)" if d != n else ""))
    for key in ("png", "svg", "dot", "mermaid"):
        print(f"  {key:8} {result[key]}")
    return 0
