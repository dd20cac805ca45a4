"""Plots of training runs: a run's loss curve (``loss.png``, drawn by
:func:`jaxbasics.gpt.train.train` into its run directory) and several runs side by side
(``jaxbasics plot``). matplotlib is imported lazily, headless."""

from __future__ import annotations

from pathlib import Path

#: the loss curve's file name in a run directory
LOSS_PNG = "loss.png"


def plot_loss(history: list[dict], path: str | Path, title: str = "training loss") -> Path:
    """Save the training loss (log scale), the validation loss where the records have one
    (``val_loss``, with bits per byte in the legend) and the learning rate of ``history``
    records against step."""
    plt = _pyplot()

    steps = [r["step"] for r in history]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    (loss_line,) = ax.plot(steps, [r["loss"] for r in history], lw=1, color="tab:blue",
                           label="training loss")
    handles = [loss_line]
    evals = [r for r in history if r.get("val_loss") is not None]
    if evals:
        last = evals[-1]
        bpb = f", {last['val_bpb']:.3f} bits/byte" if last.get("val_bpb") is not None else ""
        (val_line,) = ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals],
                              "o-", ms=3, lw=1.5, color="tab:green",
                              label=f"validation loss (last {last['val_loss']:.3f}{bpb})")
        handles.append(val_line)
    ax.set_yscale("log")
    _plain_numbers(ax)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    lr_ax = ax.twinx()
    (lr_line,) = lr_ax.plot(steps, [r["lr"] for r in history], lw=1, color="tab:orange",
                            label="learning rate")
    lr_ax.set_ylabel("learning rate")
    ax.legend(handles=[*handles, lr_line], loc="upper right", fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def plot_runs(histories: dict[str, list[dict]], path: str | Path) -> Path:
    """Save the validation bits per byte (left) and the training loss (right) of several runs
    against step, one line each, labelled by the keys of ``histories`` (their records as in
    ``metrics.jsonl``). Bits per byte compares runs whose tokenizers differ; the training loss
    (nats per token) does not, and is shown for each run's own progress."""
    plt = _pyplot()

    fig, (bpb_ax, loss_ax) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    for label, history in histories.items():
        evals = [r for r in history if r.get("val_bpb") is not None]
        last = f" ({evals[-1]['val_bpb']:.3f})" if evals else ""
        bpb_ax.plot([r["step"] for r in evals], [r["val_bpb"] for r in evals], "o-", ms=3,
                    lw=1.5, label=f"{label}{last}")
        loss_ax.plot([r["step"] for r in history], [r["loss"] for r in history], lw=0.8,
                     label=label)
    bpb_ax.set_title("validation: bits per byte of text")
    bpb_ax.set_ylabel("bits per byte (lower is better)")
    loss_ax.set_title("training loss (per token: not comparable across tokenizers)")
    loss_ax.set_ylabel("nats per token")
    loss_ax.set_yscale("log")
    _plain_numbers(loss_ax)
    for ax in (bpb_ax, loss_ax):
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    loss_ax.title.set_fontsize(9)
    return _save(fig, path)


def _pyplot():
    """matplotlib's pyplot, headless."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    """Lay out, write (folders made) and close ``fig``; returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def _plain_numbers(ax) -> None:
    """Label a log-scale y axis 4, 5, 6 rather than 4×10⁰, 5×10⁰, 6×10⁰."""
    from matplotlib.ticker import FormatStrFormatter

    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
