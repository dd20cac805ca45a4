"""Checkpoints of GPT-2 training (orbax): parameters, optimizer state and step, plus a JSON
sidecar with the configuration and loss history so a run can be resumed or reloaded.

Layout of a run directory::

    run/
      checkpoints/<step>/...    orbax StandardSave of {"params", "opt_state"}
      run.json                  {"config", "options", "task", "evaluation", "step"} (the
                                history is metrics.jsonl's: :mod:`jaxbasics.gpt.metrics`)
      tokenizer/                the data's tokenizer (runs on a prepared corpus)
      metrics.jsonl, events/    the history again, for reading and TensorBoard (gpt.metrics)

``run.json`` is the commit point: a checkpoint is complete once the sidecar names its step.
Orbax writes each step into a temporary directory that it renames when the step is whole, and
the sidecar is replaced atomically after that, so a process killed at any moment of a save
(even ``kill -9``) leaves the previous sidecar and its step, which :func:`restore` reads; a
step directory the sidecar does not name is the remnant of such a save and is replaced when
that step is saved again. Ctrl-C during a save lets the save finish, then interrupts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax

if TYPE_CHECKING:  # orbax is imported where a checkpoint is written or read, not before a
    import orbax.checkpoint as ocp  # run's first step (~0.3 s of its start-up)

from jaxbasics import checks
from jaxbasics.gpt.config import GPTConfig

#: a run's tokenizer folder (a copy of its data's, for runs trained on a prepared corpus)
TOKENIZER_FOLDER = "tokenizer"
#: what every sidecar holds (:func:`save` is given the first four by ``train``)
SIDECAR_KEYS = ("config", "options", "task", "step")


def _manager(run_dir: Path, max_to_keep: int = 2) -> ocp.CheckpointManager:
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(Path(run_dir).absolute() / "checkpoints",
                                 options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep),
                                 item_handlers=ocp.StandardCheckpointHandler())


def _check_shapes(run_dir: Path, step: int, stored: Any, target: dict) -> None:
    """Raise ``ValueError`` naming the first array whose stored shape differs from the one the
    sidecar's configuration gives, or that one side lacks (orbax would say neither which
    file is at fault nor, for a missing array, which one)."""
    def shapes(tree: Any) -> dict[str, tuple[int, ...]]:
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {jax.tree_util.keystr(p, simple=True, separator="."): tuple(getattr(v, "shape", ()))
                for p, v in flat}

    theirs, ours = shapes(stored), shapes(target)
    for name in sorted(set(theirs) | set(ours), key=lambda n: (not n.startswith("params"), n)):
        if theirs.get(name) != ours.get(name):
            got = "absent" if name not in theirs else f"of shape {theirs[name]}"
            want = "none" if name not in ours else f"shape {ours[name]}"
            raise ValueError(f"{run_dir}: run.json and checkpoint step {step} disagree: array "
                             f"{name} is {got} in the checkpoint, but run.json's configuration "
                             f"gives {want}")


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) and SIGTERM while the block runs, then deliver them: a save
    is never left half-done by an interrupt. Nested blocks deliver to the outermost one. Outside
    the main thread (where Python handles no signals) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    kinds = (signal.SIGINT, signal.SIGTERM)
    previous = {k: signal.signal(k, lambda signum, frame: caught.append(signum)) for k in kinds}
    try:
        yield
    finally:
        for kind in kinds:
            signal.signal(kind, previous[kind])
        for signum in dict.fromkeys(caught):  # now handled by whoever was there before
            signal.raise_signal(signum)


def save(run_dir: str | Path, step: int, params: Any, opt_state: Any, meta: dict) -> None:
    """Write the arrays for ``step``, then the JSON sidecar (``meta`` plus ``step``), which
    commits them (module docstring); Ctrl-C is held back until both are written. In a
    multi-process run every process calls it (each writes its shards); process 0 writes the
    sidecar."""
    import orbax.checkpoint as ocp

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with interrupts_deferred(), _manager(run_dir) as mgr:
        if step in mgr.all_steps():  # left by a save that was killed before its sidecar
            mgr.delete(step)
        mgr.save(step, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state}),
                 force=True)
        mgr.wait_until_finished()
        if jax.process_index() == 0:  # one writer: the processes of a run share the directory
            sidecar, partial = run_dir / "run.json", run_dir / "run.json.partial"
            partial.write_text(json.dumps({**meta, "step": step}, indent=1))
            os.replace(partial, sidecar)  # atomic: the old sidecar or the new one, never half


def load_meta(run_dir: str | Path) -> dict:
    """The JSON sidecar of a run directory: ``FileNotFoundError`` if there is none,
    ``ValueError`` naming the file if it is not the sidecar :func:`save` writes."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint in {run_dir}: {path} does not exist "
                                f"(train with --out {run_dir} first)")
    meta = checks.json_object(path, ": the run directory is damaged")
    missing = [k for k in SIDECAR_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: not a jaxbasics run sidecar, or "
                         f"a damaged one")
    return meta


def restore(run_dir: str | Path, params_like: Any, opt_state_like: Any
            ) -> tuple[int, Any, Any]:
    """``(step, params, opt_state)`` of the latest checkpoint, shaped like the ``*_like`` trees
    (arrays or ``jax.ShapeDtypeStruct``). ``ValueError`` names an array whose stored shape
    the ``*_like`` trees (from the sidecar's configuration) do not share."""
    import orbax.checkpoint as ocp

    meta = load_meta(run_dir)
    target = {"params": params_like, "opt_state": opt_state_like}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    with _manager(Path(run_dir)) as mgr:
        steps, step = mgr.all_steps(), meta["step"]
        if not steps:
            raise FileNotFoundError(f"no checkpoint steps under {Path(run_dir) / 'checkpoints'}")
        if step not in steps:  # a newer step without its sidecar is a killed save's: ignored
            raise ValueError(f"run.json says step {step} but the checkpoints hold steps "
                             f"{sorted(steps)}; the run directory is inconsistent")
        _check_shapes(Path(run_dir), step, mgr.item_metadata(step), abstract)
        restored = mgr.restore(step, args=ocp.args.StandardRestore(abstract))
    return step, restored["params"], restored["opt_state"]


def config_of(meta: dict) -> GPTConfig:
    """The :class:`GPTConfig` recorded in a run's sidecar."""
    return GPTConfig.from_dict(meta["config"], "the run sidecar's config")
