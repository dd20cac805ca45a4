"""``jaxbasics compare``: PyTorch and JAX side by side, values and timings.

This module must import without PyTorch (``jaxbasics --help`` lists the command); the
handler checks for it and explains how to install it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from jaxbasics.compare import MissingTorchError, require_torch


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``compare`` subcommand to the ``jaxbasics`` parser."""
    p = sub.add_parser(
        "compare", help="PyTorch (modules, backward(), .grad, step()) vs JAX (pure functions, "
                        "jax.grad, Optax): equal numbers and timings side by side",
        description="Run the chapter's PyTorch programs and their JAX counterparts from the "
                    "same inputs and weights; print each quantity on both sides with its "
                    "difference, then time one SGD step four ways (torch eager, torch.compile, "
                    "JAX jit, JAX lax.scan). Needs the 'compare' extra (PyTorch).")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--no-timing", action="store_true", help="only the numerical comparison")
    p.add_argument("--no-compile", action="store_true",
                   help="skip torch.compile (it takes ~10 s per case to compile)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and batches")
    p.add_argument("--steps", type=int, default=100, help="SGD steps compared (default 100)")
    p.add_argument("--repeats", type=int, default=15, help="timing samples per case")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    try:
        require_torch()
    except MissingTorchError as err:
        print(f"jaxbasics compare: {err}", file=sys.stderr)
        return 3
    if args.steps < 1 or args.repeats < 1:
        print(f"jaxbasics compare: --steps and --repeats must be >= 1, got {args.steps} and "
              f"{args.repeats}", file=sys.stderr)
        return 2
    from jaxbasics.compare.parity import run_parity

    try:
        rows, values = run_parity(seed=args.seed, steps=args.steps)
    except ValueError as err:
        print(f"jaxbasics compare: {err}", file=sys.stderr)
        return 2
    result: dict[str, Any] = {**values, "rows": [r.to_dict() for r in rows],
                              "all_equal": all(r.ok for r in rows)}
    if not args.no_timing:
        from jaxbasics.compare.speed import run_timings

        try:
            result["timing"] = run_timings(compile_torch=not args.no_compile, repeats=args.repeats)
        except RuntimeError as err:  # PyTorch cannot run on the device JAX runs on
            result["timing_skipped"] = str(err)
    result["versions"] = _versions()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
    return 0 if result["all_equal"] else 1


def _versions() -> dict[str, str]:
    import flax
    import jax
    import optax
    import torch

    from jaxbasics.timing import default_device

    return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
            "torch": torch.__version__, "device": str(default_device())}


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def _print(result: dict[str, Any]) -> None:
    from rich.table import Table

    from jaxbasics.cli.console import make_console

    c = make_console()
    v = result["versions"]
    c.rule(f"[bold]PyTorch {v['torch']} vs JAX {v['jax']} (Flax {v['flax']}, Optax "
           f"{v['optax']}) on {v['device']}")
    table = Table(title="same inputs, same weights: values", title_justify="left")
    for col in ("section", "quantity", "PyTorch", "JAX", "|diff|", "tolerance", ""):
        table.add_column(col, overflow="fold")
    for r in result["rows"]:
        table.add_row(r["section"], r["quantity"], r["torch"], r["jax"], f"{r['abs_diff']:.2e}",
                      f"{r['tolerance']:.1e}", "[green]ok[/]" if r["ok"] else "[red]DIFFERS[/]")
    c.print(table)
    if "timing" in result:
        t = Table(title="one SGD step (µs, median; speed-up = torch eager / other)",
                  title_justify="left")
        for col in ("case", "torch eager", "torch.compile", "JAX jit", "JAX scan/step",
                    "jit speed-up", "scan speed-up"):
            t.add_column(col, justify="right")
        for case, e in result["timing"].items():
            t.add_row(case, _us(e["torch_eager_us"]), _us(e["torch_compile_us"]),
                      _us(e["jax_jit_us"]), _us(e["jax_scan_us"]),
                      f"{e.get('speedup_jax_jit_vs_torch_eager', 0):.1f}×",
                      f"{e.get('speedup_jax_scan_vs_torch_eager', 0):.0f}×")
        c.print(t)
    if "timing_skipped" in result:
        c.print(f"[yellow]timings skipped:[/] {result['timing_skipped']}")
    verdict = "all quantities equal within tolerance" if result["all_equal"] else \
        "SOME QUANTITIES DIFFER"
    c.print(f"[bold]{verdict}[/]")
