"""``jaxbasics bench``: run suites, print tables, write JSON (and plots with --plot)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from jaxbasics.cli.help import SCAN_LAYERS_WORDS, DefaultsFormatter, in_flags
from jaxbasics.cli.paths import require_writable


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand to the ``jaxbasics`` parser."""
    p = sub.add_parser(
        "bench", help="benchmark the chapter's problems (neuron, SimpleNet, GPT-2 step), JAX vs "
                      "PyTorch, on CPU/GPU/TPU; write JSON",
        description="Median-of-repeats timings after warm-up, with device sync. smoke: seconds, "
                    "for CI; cpu: about two minutes on 2 CPU cores; full: GPT-2 124M, "
                    "for accelerators.",
        formatter_class=DefaultsFormatter)
    add_arguments(p)
    p.set_defaults(func=cmd_bench)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options shared by ``jaxbasics bench`` and ``python -m benchmarks``."""
    p.add_argument("--suite", choices=["neuron", "simplenet", "gpt2", "gpt2-parts", "scaling",
                                       "data", "pretrain", "all"], default="all",
                   help="gpt2-parts: the GPT-2 step's blocks, attention, head + loss and "
                        "optimizer update, then its matmul kernels and attention's batched "
                        "products, timed alone; scaling: data-parallel GPT-2 step on 1, 2, 4, "
                        "8 devices; data: prepare's throughput and memory, batch assembly "
                        "(run only when named: 'all' leaves it out); pretrain: train --data's loop "
                        "beside a PyTorch loop on the same shards (run only when named)")
    p.add_argument("--size", choices=["smoke", "cpu", "full"], default="cpu",
                   help="smoke: tiny, seconds (CI); cpu: small problems for a laptop's CPU; "
                        "full: GPT-2 124M, for accelerators")
    p.add_argument("--device", choices=["cpu", "gpu", "tpu"], default=None,
                   help="JAX platform to run on (None: JAX's default device)")
    p.add_argument("--variants", type=_patterns, default=None, metavar="PATTERNS",
                   help="gpt2 suite: only the variants whose names match one of these "
                        "comma-separated shell patterns, e.g. '*fp32*' or "
                        "'jax_bf16*,torch_*_bf16' (to split a long accelerator run; join the "
                        "files with benchmarks/plot.py; None: all)")
    p.add_argument("--out", type=Path, default=None,
                   help="write the results JSON here, after each suite and GPT-2 timing group "
                        "as well (meta.complete false until the run ends; None: no file)")
    p.add_argument("--plot", type=Path, default=None,
                   help="also draw PNG charts into this folder (None: no charts)")
    p.add_argument("--no-compile", action="store_true",
                   help="skip torch.compile (the smoke size skips it anyway: its compile takes "
                        "longer than the runs)")
    p.add_argument("--data", type=Path, default=None,
                   help="pretrain suite: a prepared DATA folder (None: the standard library, "
                        "prepared in a temporary folder)")
    p.add_argument("--preset", default=None,
                   help="pretrain suite: a GPT-2 size (gpt2, gpt2-medium, ...; None: the "
                        "size's model, d=128, 4 layers, 4 heads at --size cpu)")
    p.add_argument("--context", type=int, default=None,
                   help="pretrain suite: context length (None: the size's, 128 at cpu)")
    p.add_argument("--steps", type=int, default=None,
                   help="pretrain suite: steps per run (None: the size's, 60 at cpu)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="pretrain suite: rows per batch (None: the size's, 32 at cpu)")
    p.add_argument("--rounds", type=int, default=None,
                   help="pretrain suite: interleaved rounds of every side (None: the size's, 2 "
                        "at cpu; the first with empty compilation caches)")
    p.add_argument("--remat", default=None, metavar="POLICY",
                   help="pretrain suite: the JAX side's remat, as train --remat takes it "
                        "('dots', 'full', 'off'; None: train's default, auto)")
    p.add_argument("--scan-layers", choices=list(SCAN_LAYERS_WORDS), default=None,
                   help="pretrain suite: the JAX side's layer loop, as train --scan-layers "
                        "takes it (None: train's default, auto)")
    p.add_argument("--bf16", action="store_true",
                   help="pretrain suite: both sides in bfloat16 compute (JAX as train --bf16, "
                        "PyTorch under autocast), float32 parameters")


def _patterns(text: str) -> list[str]:
    patterns = [p.strip() for p in text.split(",") if p.strip()]
    if not patterns:
        raise argparse.ArgumentTypeError(f"expected comma-separated name patterns, got {text!r}")
    return patterns


#: run_pretrain's keywords as bench's options (the words of its refusals)
PRETRAIN_FLAGS = {"steps": "--steps", "context": "--context", "batch_size": "--batch-size",
                  "rounds": "--rounds", "preset": "--preset", "remat": "--remat",
                  "scan_layers": "--scan-layers"}


def _pretrain_options(args: argparse.Namespace) -> dict[str, Any]:
    """The pretrain suite's options the command line gave (a 0 is given, and refused there)."""
    given = {k: getattr(args, k) for k in ("data", "preset", "context", "steps", "batch_size",
                                           "rounds") if getattr(args, k) is not None}
    if args.bf16:
        given["bf16"] = True
    if args.remat is not None:
        given["remat"] = False if args.remat == "off" else args.remat
    if args.scan_layers is not None:
        given["scan_layers"] = SCAN_LAYERS_WORDS[args.scan_layers]
    return given


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the chosen suites, print their tables, write JSON/plots; returns the exit status."""
    # JAX and PyTorch share one GPU in this process: JAX must not reserve 75 % of its memory
    # up front (read when JAX first touches a device, which has not happened yet here)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if args.device:
        import jax

        try:
            device = jax.devices(args.device)[0]
        except RuntimeError:
            available = sorted({d.platform for d in jax.devices()})
            print(f"jaxbasics bench: --device {args.device}: JAX sees no such device here "
                  f"(available: {', '.join(available)})", file=sys.stderr)
            return 2
        jax.config.update("jax_default_device", device)
    for option, path, is_dir in (("--out", args.out, False), ("--plot", args.plot, True)):
        try:  # found now, not after minutes of timing
            if path is not None:
                require_writable(path, option, is_dir=is_dir)
        except ValueError as err:
            print(f"jaxbasics bench: {err}", file=sys.stderr)
            return 2
    from jaxbasics.bench.results import write_json
    from jaxbasics.bench.suites import SUITES, run_suites

    suites = SUITES if args.suite == "all" else (args.suite,)
    try:
        result = run_suites(suites, args.size, compile_torch=False if args.no_compile else None,
                            variants=args.variants,
                            pretrain=_pretrain_options(args),
                            on_update=(lambda r: write_json(r, args.out)) if args.out else None,
                            log=lambda msg: print(f"· {msg}", file=sys.stderr, flush=True))
    except (RuntimeError, ValueError) as err:
        print(f"jaxbasics bench: {in_flags(str(err), PRETRAIN_FLAGS)}", file=sys.stderr)
        return 2
    print_tables(result)
    if args.out:
        print(f"results: {write_json(result, args.out)}")
    if args.plot:
        from jaxbasics.bench.plot import plot_results

        for path in plot_results(result, args.plot):
            print(f"plot: {path}")
    return 0



def _f(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def print_tables(result: dict[str, Any]) -> None:
    """Render a results dict (as written to JSON) as tables."""
    from rich.table import Table

    from jaxbasics.cli.console import make_console

    c = make_console()
    m = result["meta"]
    cores = (f", {m['cpus_usable']} of {m['cpus_total']} host cores" if "cpus_usable" in m
             else "") + (f" ({m['cpu_model']})" if m.get("cpu_model") else "")
    c.rule(f"[bold]{m['device_kind']} ×{m['device_count']} ({m['platform']}), size {m['size']}, "
           f"JAX {m['jax']}, PyTorch {m.get('torch')}{cores}")
    rows = []
    if "neuron" in result:
        rows.append(("neuron", result["neuron"]))
    for name, entry in result.get("simplenet", {}).items():
        rows.append((f"simplenet {name}", entry))
    if rows:
        t = Table(title="one SGD step, µs (median); speed-up = torch eager / other",
                  title_justify="left")
        for col in ("case", "torch eager", "torch.compile", "JAX jit", "JAX scan/step",
                    "jit ×", "scan ×"):
            t.add_column(col, justify="right")
        for name, e in rows:
            t.add_row(name, _f(e["torch_eager_us"], ",.2f"), _f(e.get("torch_compile_us"), ",.2f"),
                      _f(e["jax_jit_us"], ",.2f"), _f(e["jax_scan_us"], ",.3f"),
                      _f(e.get("speedup_jax_jit_vs_torch_eager"), ".1f"),
                      _f(e.get("speedup_jax_scan_vs_torch_eager"), ".0f"))
        c.print(t)
    if "data" in result:
        from jaxbasics.bench.data import summary_rows

        t = Table(title="data pipeline: prepare and batches", title_justify="left")
        for col in ("figure", "measured", "goal", "met"):
            t.add_column(col)
        for row in summary_rows(result["data"]):
            t.add_row(*row)
        c.print(t)
    if "pretrain" in result:
        print_pretrain(c, result["pretrain"])
    if "gpt2" in result:
        g = result["gpt2"]
        cfg = g["config"]
        t = Table(title=f"GPT-2 train step: d={cfg['emb_dim']}, {cfg['n_layers']} layers, vocab "
                        f"{cfg['vocab_size']}, batch {g['batch_size']}×{g['seq_len']}, "
                        f"{g['parameters']:,} params; peak {g['peak_flops'] / 1e12:.3g} TFLOP/s "
                        f"({g['peak_source']})", title_justify="left")
        for col in ("variant", "step ms", "tokens/s", "MFU", "compile s", "vs torch eager",
                    "peak MiB", "page faults/step", "first loss"):
            t.add_column(col, justify="right")
        for name, e in g["variants"].items():
            if "error" in e:
                t.add_row(name, e["error"][:60], "", "", "", "", "", "", "")
                continue
            t.add_row(name, _f(e["step_ms"], ",.1f"), _f(e["tokens_per_s"], ",.0f"),
                      "disturbed" if e.get("mfu_disturbed") else _f(e["mfu"], ".1%"),
                      _f(e.get("compile_s"), ".1f"),
                      _f(e.get("speedup_vs_torch_eager"), ".2f"),
                      _f(e["device_peak_bytes"] / 2**20 if "device_peak_bytes" in e else None,
                         ",.0f"), _f(e.get("host_page_faults_per_step"), ",.0f"),
                      _f(e["first_loss"], ".4f"))
        c.print(t)
        if "disturbed" in g:
            c.print(f"[yellow]MFU: {g['disturbed']}[/]")
    if "gpt2_parts" in result:
        g = result["gpt2_parts"]
        t = Table(title=f"GPT-2 step taken apart (JAX remat={g['remat']}): ms, median; "
                        "values equal = same computation", title_justify="left")
        for col in ("part", "JAX ms", "torch ms", "JAX vs torch", "JAX value", "torch value"):
            t.add_column(col, justify="right")
        for name, e in g["parts"].items():
            t.add_row(name, _f(e["jax_ms"], ",.2f"), _f(e["torch_ms"], ",.2f"),
                      _f(e["speedup_vs_torch"], ".2f"), _f(e["jax_value"], ".6g"),
                      _f(e["torch_value"], ".6g"))
        c.print(t)
        if g.get("matmuls"):
            t = Table(title="the step's matmul kernels alone (m×k×n: an (m, k)·(k, n) product; "
                            f"m = {g['batch_size'] * g['seq_len']} tokens or the weight's rows)",
                      title_justify="left")
            for col in ("matmul", "product", "m×k×n", "JAX ms", "torch ms", "JAX GFLOP/s",
                        "torch GFLOP/s", "JAX vs torch", "rel. diff"):
                t.add_column(col, justify="right")
            for e in g["matmuls"]:
                t.add_row(e["matmul"], e["product"], "×".join(map(str, e["m_k_n"])),
                          _f(e["jax_ms"], ",.3f"), _f(e["torch_ms"], ",.3f"),
                          _f(e["jax_gflops"], ",.0f"), _f(e["torch_gflops"], ",.0f"),
                          _f(e["speedup_vs_torch"], ".2f"), _f(e["rel_diff"], ".1e"))
            n_layers = g["config"]["n_layers"]
            for key, e in g.get("matmuls_per_step", {}).items():
                t.add_row("per step", "all products" if key == "all" else key,
                          f"{n_layers} layers + head", _f(e["jax_ms"], ",.3f"),
                          _f(e["torch_ms"], ",.3f"), "", "", _f(e["speedup_vs_torch"], ".2f"),
                          "", end_section=key == "all")
            c.print(t)
        if g.get("attention_matmuls"):
            t = Table(title="attention's batched products alone, over n = B·H heads (m×k×n per "
                            "head)", title_justify="left")
            for col in ("product", "einsum", "n × m×k×n", "JAX ms", "torch ms", "JAX GFLOP/s",
                        "torch GFLOP/s", "JAX vs torch", "rel. diff"):
                t.add_column(col, justify="right")
            for e in g["attention_matmuls"]:
                t.add_row(e["product"], e["einsum"],
                          f"{e['batch']} × " + "×".join(map(str, e["m_k_n"])),
                          _f(e["jax_ms"], ",.3f"), _f(e["torch_ms"], ",.3f"),
                          _f(e["jax_gflops"], ",.0f"), _f(e["torch_gflops"], ",.0f"),
                          _f(e["speedup_vs_torch"], ".2f"), _f(e["rel_diff"], ".1e"))
            c.print(t)
    if "scaling" in result:
        s = result["scaling"]
        note = " (simulated devices sharing the host's cores)" if s["simulated_devices"] else ""
        t = Table(title=f"data-parallel scaling, {s['per_device_batch']} sequences per device"
                        f"{note}", title_justify="left")
        for col in ("devices", "step ms", "tokens/s", "tokens/s per device", "efficiency"):
            t.add_column(col, justify="right")
        for r in s["runs"].values():
            t.add_row(str(r["devices"]), _f(r["step_ms"], ",.1f"), _f(r["tokens_per_s"], ",.0f"),
                      _f(r["tokens_per_s_per_device"], ",.0f"), _f(r["efficiency"], ".0%"))
        c.print(t)


def print_pretrain(c: Any, p: dict[str, Any]) -> None:
    """The pretrain suite's tables: each side's figures, the JAX step's breakdown, the goals."""
    from rich.table import Table

    from jaxbasics.bench.pretrain import at_most

    cfg = p["config"]
    t = Table(title=f"pretraining on the same shards: d={cfg['emb_dim']}, {cfg['n_layers']} "
                    f"layers, {cfg['n_heads']} heads, vocab {cfg['vocab_size']}, batch "
                    f"{cfg['batch']}×{cfg['context']}, {cfg['steps']} steps"
                    f"{', ' + str(cfg['rounds']) + ' rounds' if 'rounds' in cfg else ''} (JAX "
                    f"{cfg.get('jax_steps_per_call', 1)} a call), "
                    f"{'bf16' if cfg.get('dtype', 'float32') != 'float32' else 'fp32'}, JAX "
                    f"attention {cfg.get('jax_attention', 'xla')}, remat "
                    f"{cfg.get('jax_remat', 'dots') or 'off'}, layers "
                    f"{'scanned' if cfg.get('jax_scan_layers', True) else 'unrolled'}; peak "
                    f"{p['peak_flops'] / 1e9:,.0f} GFLOP/s "
                    f"({p.get('peak_source', '2048² fp32 matmul, this run')})",
              title_justify="left")
    device = any(e.get("device_peak_mib") is not None for e in p["summary"].values())
    for col in ("", "steady ms/step", "tokens/s", "MFU", "launch to 1st loss s (cold / warm cache)",
                "wall s", "peak RSS MiB", *(["device peak MiB"] if device else []),
                "loss at step 1"):
        t.add_column(col, justify="right")
    for name, e in p["summary"].items():
        t.add_row(name, _f(e["steady_step_ms"], ",.1f"), _f(e["tokens_per_s"], ",.0f"),
                  _f(e["mfu"], ".1%"),
                  f"{e['first_step_s_cold']:.1f} / {_f(e['first_step_s_warm'], '.1f')}",
                  _f(e["wall_s"], ",.1f"), _f(e["peak_rss_mib"], ",.0f"),
                  *([_f(e.get("device_peak_mib"), ",.0f")] if device else []),
                  _f(e["first_loss"], ".6f"))
    c.print(t)
    t = Table(title="the JAX step taken apart (each phase timed alone), ms", title_justify="left")
    for col in ("phase", "ms", "share"):
        t.add_column(col, justify="right")
    total = p["summary"]["jax"]["steady_step_ms"]
    for name, ms in p["jax_breakdown_ms"].items():
        t.add_row(name.replace("_", " "), _f(ms, ",.2f"), _f(ms / total, ".0%"))
    c.print(t)
    t = Table(title="goals", title_justify="left")
    for col in ("goal", "measured", "target", "met"):
        t.add_column(col)
    for name, g in p["goals"].items():
        label = name.replace("_", " ") + (" (cold cache: one round)"
                                          if g.get("cache") == "cold" else "")
        t.add_row(label, f"{g['value']:.2f}", f"{'≤' if at_most(name) else '≥'} {g['goal']:.2f}",
                  "met" if g["met"] else "NOT met")
    c.print(t)
