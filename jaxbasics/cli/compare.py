"""``jaxbasics compare``: PyTorch and JAX side by side, values and timings.

This module must import without PyTorch (``jaxbasics --help`` lists the command); the
handler checks for it and explains how to install it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from jaxbasics.cli.help import DefaultsFormatter
from jaxbasics.compare import MissingTorchError, require_torch


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``compare`` subcommand to the ``jaxbasics`` parser."""
    p = sub.add_parser(
        "compare", help="PyTorch (modules, backward(), .grad, step()) vs JAX (pure functions, "
                        "jax.grad, Optax): equal numbers and timings side by side",
        description="Run the chapter's PyTorch programs and their JAX counterparts from the "
                    "same inputs and weights; print each quantity on both sides with its "
                    "difference, then time one SGD step four ways (torch eager, torch.compile, "
                    "JAX jit, JAX lax.scan). Needs the 'compare' extra (PyTorch).",
        formatter_class=DefaultsFormatter)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--no-timing", action="store_true", help="only the numerical comparison")
    p.add_argument("--no-compile", action="store_true",
                   help="skip torch.compile (it takes ~10 s per case to compile)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for weights and batches: SimpleNet's example is the one tour and "
                        "graph show for the same seed")
    p.add_argument("--steps", type=int, default=100, help="SGD steps compared")
    p.add_argument("--repeats", type=int, default=15, help="timing samples per case")
    p.add_argument("--gpt2", action="store_true",
                   help="instead: the chapter's GPT-2 both ways on identical weights (logits, "
                        "every gradient by name, an AdamW run, memory kept for backward, "
                        "time to first step); under a minute on 2 CPU cores at the default size")
    p.add_argument("--gpt2-size", default="small", metavar="SIZE",
                   help="small (4 layers, 256 wide, vocab 1024, context 128), a GPT-2 preset, "
                        "or e.g. emb=64,layers=2,heads=4,vocab=128,context=16")
    p.add_argument("--gpt2-steps", type=int, default=50, help="AdamW steps")
    p.add_argument("--gpt2-batch", type=int, default=4, help="batch size")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the memory measurements (one compile per remat policy)")
    p.add_argument("--out", type=Path, default=Path("graphs"),
                   help="folder for the AdamW loss curves (gpt2-adamw.png)")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    try:
        require_torch()
    except MissingTorchError as err:
        print(f"jaxbasics compare: {err}", file=sys.stderr)
        return 3
    if args.gpt2:
        return _cmd_gpt2(args)
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


def _cmd_gpt2(args: argparse.Namespace) -> int:
    from jaxbasics.cli.paths import require_writable
    from jaxbasics.compare.gpt2_styles import compare_gpt2, parse_size

    try:
        cfg = parse_size(args.gpt2_size)
        require_writable(args.out, "--out", is_dir=True)
        result = compare_gpt2(cfg, batch_size=args.gpt2_batch, steps=args.gpt2_steps,
                              seed=args.seed, plot=args.out / "gpt2-adamw.png",
                              memory=not args.no_memory)
    except (ValueError, TypeError) as err:
        print(f"jaxbasics compare: {err}", file=sys.stderr)
        return 2
    out = {"gpt2": result, "versions": _versions()}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print_gpt2(result, out["versions"], args.gpt2_steps)
    return 0 if result["ok"] else 1


def _print_gpt2(g: dict[str, Any], v: dict[str, str], steps: int) -> None:
    from rich.table import Table

    from jaxbasics.cli.console import make_console

    c = make_console()
    cfg = g["config"]
    c.rule(f"[bold]GPT-2 both ways: PyTorch {v['torch']} modules vs JAX {v['jax']} pure "
           f"functions, on {v['device']}")
    c.print(f"d={cfg['emb_dim']}, {cfg['n_layers']} layers, {cfg['n_heads']} heads, vocab "
            f"{cfg['vocab_size']}, context {cfg['context_length']}, batch {g['batch_size']}; "
            f"identical weights and batches, dropout off")
    ok = "[green]ok[/]"
    c.print(f"loss {g['loss']['torch']:.6f} (PyTorch) vs {g['loss']['jax']:.6f} (JAX); "
            f"max |logit diff| {g['max_abs_logit_diff']:.2e} (≤ {g['logit_tolerance']:.0e})")
    t = Table(title=f"gradients of all {len(g['grad_worst'])} parameter tensors, worst first "
                    f"(relative = max |diff| / max |grad|, ≤ {g['grad_tolerance_rel']:.0e})",
              title_justify="left")
    for col in ("parameter (PyTorch)", "Flax", "shape", "max |diff|", "relative", ""):
        t.add_column(col)
    for r in g["grad_worst"][:8]:
        t.add_row(r["name"], r["flax"], str(tuple(r["shape"])), f"{r['max_abs_diff']:.2e}",
                  f"{r['max_rel_diff']:.2e}", ok if r["ok"] else "[red]DIFFERS[/]")
    c.print(t)
    a = g[f"adamw_{steps}"]
    c.print(f"AdamW, {steps} steps (lr {a['lr']:g}): final loss {a['loss_torch'][-1]:.5f} vs "
            f"{a['loss_jax'][-1]:.5f}; parameters differ by at most "
            f"{a['max_abs_param_diff']:.2e} (≤ {a['tolerance']:.1e}), "
            f"{a['mean_abs_param_diff']:.1e} on average"
            + (f"; curves: {a['png']}" if "png" in a else ""))
    if "memory" in g:
        m = g["memory"]
        t = Table(title="kept for the backward pass (MiB)", title_justify="left")
        for col in ("what", "MiB"):
            t.add_column(col)
        t.add_row(f"PyTorch saved tensors ({m['torch_saved_tensors']}), parameters included",
                  f"{m['torch_saved_mib']:.1f}")
        t.add_row("PyTorch saved tensors, parameters excluded",
                  f"{m['torch_saved_mib_without_params']:.1f}")
        for policy, e in m["by_remat"].items():
            temp = e["compiled_temp_mib"]
            t.add_row(f"JAX residuals, remat={policy} (compiled step's temporaries)",
                      f"{e['residual_mib']:.1f} ({'—' if temp is None else f'{temp:.1f}'})")
        c.print(t)
    tm = g["time"]
    c.print(f"first step: PyTorch {tm['torch_first_step_s'] * 1e3:.0f} ms (eager) vs JAX "
            f"{tm['jax_first_step_s']:.2f} s (trace {tm['jax_trace_s']:.2f} s + compile "
            f"{tm['jax_compile_s']:.2f} s + run); then per step {tm['torch_step_ms']:.1f} ms vs "
            f"{tm['jax_step_ms']:.1f} ms (median)")
    c.print("[bold]" + ("both styles agree within tolerance" if g["ok"] else
                        "THE STYLES DISAGREE") + "[/]")
