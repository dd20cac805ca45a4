"""Charts from a benchmark results JSON: step time by framework, GPT-2 tokens/s and MFU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_FRAMEWORKS = (("torch_eager_us", "torch eager"), ("torch_compile_us", "torch.compile"),
               ("jax_jit_us", "JAX jit"), ("jax_scan_us", "JAX lax.scan (per step)"))


def plot_results(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``step_time.png`` (small models) and ``gpt2.png`` into ``out_dir``; return paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = result["meta"]
    device = f"{m['device_kind']} ({m['platform']}), JAX {m['jax']}, torch {m.get('torch')}"
    if m.get("complete") is False:  # written while running, and the run did not finish
        device += " (incomplete run)"
    written = []
    cases = ([("neuron", result["neuron"])] if "neuron" in result else []) + [
        (f"SimpleNet {k}", v) for k, v in result.get("simplenet", {}).items()]
    if cases:
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
        width = 0.8 / len(_FRAMEWORKS)
        x = np.arange(len(cases))
        for i, (key, label) in enumerate(_FRAMEWORKS):
            vals = [c[1].get(key) or np.nan for c in cases]
            bars = ax.bar(x + (i - 1.5) * width, vals, width, label=label)
            ax.bar_label(bars, fmt="%.3g", fontsize=6, rotation=90, padding=2)
        ax.set_yscale("log")
        ax.set_xticks(x, [c[0] for c in cases])
        ax.set_ylabel("µs per SGD step (median, log scale)")
        ax.set_title(f"One optimisation step\n{device}", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out_dir / "step_time.png")
        fig.savefig(written[-1])
        plt.close(fig)
    if "gpt2" in result:
        g = result["gpt2"]
        names = [k for k, v in g["variants"].items() if "tokens_per_s" in v]
        # horizontal bars, first variant on top: long names stay readable however many run
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 1.6 + 0.42 * len(names)), dpi=120,
                                     sharey=True)
        tps = [g["variants"][k]["tokens_per_s"] for k in names]
        mfu = [100 * (g["variants"][k]["mfu"] or 0) for k in names]
        a1.bar_label(a1.barh(names, tps, color="tab:blue"), fmt="%.0f", fontsize=7, padding=2)
        a1.set_xlabel("tokens / s")
        a2.bar_label(a2.barh(names, mfu, color="tab:green"), fmt="%.1f%%", fontsize=7, padding=2)
        a2.set_xlabel(f"MFU, % of {g['peak_flops'] / 1e12:.3g} TFLOP/s")
        a1.invert_yaxis()
        a1.tick_params(axis="y", labelsize=8)
        for ax in (a1, a2):
            ax.margins(x=0.15)
        cfg = g["config"]
        fig.suptitle(f"GPT-2 train step (d={cfg['emb_dim']}, L={cfg['n_layers']}, batch "
                     f"{g['batch_size']}×{g['seq_len']})\n{device}", fontsize=9)
        fig.tight_layout()
        written.append(out_dir / "gpt2.png")
        fig.savefig(written[-1])
        plt.close(fig)
    return written
