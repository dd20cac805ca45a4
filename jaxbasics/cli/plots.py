"""Plots written by the CLI (training loss curve). matplotlib is imported lazily, headless."""

from __future__ import annotations

from pathlib import Path


def plot_loss(history: list[dict], path: str | Path, title: str = "training loss") -> Path:
    """Save the loss (log scale) and learning rate of ``history`` records against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    (loss_line,) = ax.plot(steps, [r["loss"] for r in history], lw=1, color="tab:blue",
                           label="loss")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    lr_ax = ax.twinx()
    (lr_line,) = lr_ax.plot(steps, [r["lr"] for r in history], lw=1, color="tab:orange",
                            label="learning rate")
    lr_ax.set_ylabel("learning rate")
    ax.legend(handles=[loss_line, lr_line], loc="upper right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
