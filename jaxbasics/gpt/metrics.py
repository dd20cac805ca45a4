"""A training run's metrics on disk, beside its checkpoints (:mod:`jaxbasics.gpt.checkpoint`)::

    run/
      metrics.jsonl     one JSON object a line: every record of the history (step, loss,
                        grad_norm, lr, tokens_per_s; val_loss, val_ppl, val_bpb and sample at
                        evaluations)
      events/           TensorBoard event files of the same scalars (``tensorboard --logdir run``)

Both are written as the run goes, each compiled call's records as it ends (``metrics.jsonl``
flushed at once, TensorBoard at each evaluation and at least every few seconds), so they can be
watched live; they may hold steps after the latest checkpoint. ``metrics.jsonl`` is the run's
history: a resumed run reads it back up to its checkpoint's step (:func:`history_until`),
rewrites it to hold exactly those records and tells TensorBoard to drop the steps after them
(``purge_step``). The event files are written with ``tensorboardX`` (no TensorFlow); without
it only ``metrics.jsonl`` is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: the scalars of a record that go to TensorBoard, under these tags
SCALARS = {"loss": "train/loss", "grad_norm": "train/grad_norm", "lr": "train/lr",
           "tokens_per_s": "train/tokens_per_s", "ms_per_step": "train/ms_per_step",
           "tflops": "train/tflops", "mfu": "train/mfu", "val_loss": "val/loss",
           "val_ppl": "val/perplexity", "val_bpb": "val/bits_per_byte"}
#: the keys of a record that measure time, not the model (they differ between equal runs)
TIMING = ("tokens_per_s", "ms_per_step", "tflops", "mfu")
JSONL = "metrics.jsonl"
EVENTS = "events"


class MetricsLog:
    """Appends history records to ``run_dir/metrics.jsonl`` and TensorBoard event files.

    ``history``: the records the run starts from (a resumed run's; ``[]`` for a new one):
    ``metrics.jsonl`` is rewritten to hold exactly them, and TensorBoard drops what an earlier
    attempt wrote after them."""

    def __init__(self, run_dir: str | Path, history: list[dict]):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        partial = self.dir / (JSONL + ".partial")
        partial.write_text("".join(json.dumps(r) + "\n" for r in history))
        os.replace(partial, self.dir / JSONL)
        self.writer: Any = None
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            return
        last = history[-1]["step"] if history else 0
        self.writer = SummaryWriter(str(self.dir / EVENTS), purge_step=last + 1, flush_secs=5)

    def write(self, records: list[dict]) -> None:
        """Append ``records``: to ``metrics.jsonl`` at once (flushed), to TensorBoard's
        buffer, flushed at an evaluation (else every few seconds by its writer)."""
        with open(self.dir / JSONL, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        if self.writer is None:
            return
        for r in records:
            for key, tag in SCALARS.items():
                if r.get(key) is not None:
                    self.writer.add_scalar(tag, float(r[key]), r["step"])
            if r.get("sample") is not None:
                self.writer.add_text("val/sample", r["sample"], r["step"])
        if any("val_loss" in r for r in records):
            self.writer.flush()

    def close(self) -> None:
        """Close the event file."""
        if self.writer is not None:
            self.writer.close()


def read(run_dir: str | Path) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl``. ``FileNotFoundError`` when the folder has
    none, ``ValueError`` naming the first line that is not JSON, or a file whose records lack a
    step and a loss (not this module's file, or a damaged one)."""
    path = Path(run_dir) / JSONL
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} holds no {JSONL} (a run directory of "
                                f"'jaxbasics train')")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {number} is not JSON: not a metrics file of "
                             f"'jaxbasics train', or a damaged one") from err
    if not records or not all(isinstance(r, dict) and "step" in r and "loss" in r
                              for r in records):
        raise ValueError(f"{path} holds no records with a step and a loss")
    return records


def history_until(run_dir: str | Path, step: int) -> list[dict]:
    """The records of steps 1 to ``step`` from ``run_dir/metrics.jsonl`` (a run resumed from
    its checkpoint at ``step``): what a run stopped at any moment wrote after that step, a line
    cut short included, is left out. ``ValueError`` naming the file when it does not hold every
    step up to ``step`` (``FileNotFoundError`` when there is none)."""
    path = Path(run_dir) / JSONL
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume {run_dir}: its history, {path}, is missing")
    records: list[dict] = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break  # a line the stopped run did not finish
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                break
            if record["step"] > step:
                break
            records.append(record)
    if [r["step"] for r in records] != list(range(1, step + 1)):
        raise ValueError(f"cannot resume {run_dir}: {path} does not hold the records of steps 1 "
                         f"to {step} that its checkpoint was saved after (damaged or replaced)")
    return records
