"""GPT training: optimizer pieces, learning the addition task, exact checkpoint resume."""

import dataclasses
import functools
import re
import signal
from types import SimpleNamespace

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import reference_lr

from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.data import IGNORE, AdditionTask, TextDataset, step_key
from jaxbasics.gpt.model import ParamInfo, parameter_table
from jaxbasics.gpt.train import (
    UNROLL_MAX_CONTEXT,
    UNROLL_MAX_LAYERS,
    UNROLL_MAX_WIDTH,
    TrainOptions,
    build_model,
    decay_mask,
    learning_rate_schedule,
    make_gpt_train_loop,
    make_gpt_train_step,
    make_optimizer,
    release_free_memory,
    resolve_layers,
    resolve_remat,
    train,
)
from jaxbasics.params import split_params

CFG = GPTConfig(vocab_size=256, context_length=16, emb_dim=64, n_heads=4, n_layers=2,
                drop_rate=0.0)


# shared by the resume tests, so that they share compiled programs (the suite's time is compiling)
SPC_OPTS = TrainOptions(steps=11, batch_size=8, warmup_steps=2, save_every=5)
RESUME = pytest.mark.xdist_group("resume")  # on one worker, where _uninterrupted is computed once


@functools.cache
def _uninterrupted(accumulate: int):
    """The uninterrupted run that the resume tests compare with (dropout on: its keys must line
    up too)."""
    return train(CFG.replace(drop_rate=0.1), AdditionTask(2),
                 dataclasses.replace(SPC_OPTS, accumulate=accumulate))


def test_decay_mask_covers_matrices_and_embeddings_only():
    table = parameter_table(build_model(CFG.replace(qkv_bias=True), TrainOptions()))
    flat = {"/".join(str(k.key) for k in path): v for path, v in
            jax.tree_util.tree_flatten_with_path(decay_mask(table))[0]}
    assert flat["tok_emb/embedding"] and flat["blocks/attn/qkv/kernel"] and flat["head/kernel"]
    assert not flat["blocks/attn/qkv/bias"] and not flat["blocks/ln1/scale"]
    assert not flat["ln_f/bias"]
    assert sum(flat.values()) == 7  # 2 embeddings, qkv, proj, fc, mlp proj, head


def test_auto_remat_keeps_matmul_outputs_where_measured_faster():
    assert resolve_remat("auto", "cpu") == "dots"  # layers scanned
    assert resolve_remat("auto", "cpu", scan_layers=False) is False  # unrolled: save everything
    assert resolve_remat("auto", "gpu") == "dots"  # XLA's attention: measured faster on an H200
    assert resolve_remat("auto", "gpu", attention="cudnn") is False  # not measured beside it
    assert resolve_remat("auto", "tpu") is False
    assert resolve_remat("full", "cpu") == "full" and resolve_remat(False, "cpu") is False
    # these tests run on the CPU: CFG (d=64) is narrow, its layers unrolled
    model = build_model(CFG, TrainOptions())
    assert model.remat is False and model.scan_layers is False
    model = build_model(CFG, TrainOptions(scan_layers=True))
    assert model.remat == "dots" and model.scan_layers is True
    with pytest.raises(ValueError, match="remat must be False, True, 'full', 'dots'"):
        TrainOptions(remat="often")


def test_auto_scan_layers_unrolls_narrow_models_on_a_cpu():
    """Unrolled only where measured faster: up to d=256, context 256, 12 layers."""
    wide = CFG.replace(emb_dim=UNROLL_MAX_WIDTH + 64)
    edge = CFG.replace(emb_dim=UNROLL_MAX_WIDTH, context_length=UNROLL_MAX_CONTEXT,
                       n_layers=UNROLL_MAX_LAYERS)
    assert resolve_layers("auto", CFG, "cpu") is False
    assert resolve_layers("auto", edge, "cpu") is False
    assert resolve_layers("auto", wide, "cpu") is True
    assert resolve_layers("auto", edge.replace(context_length=UNROLL_MAX_CONTEXT * 2), "cpu")
    assert resolve_layers("auto", edge.replace(n_layers=UNROLL_MAX_LAYERS + 1), "cpu")
    # measured on one device: a mesh of several keeps the scan
    assert resolve_layers("auto", CFG, "cpu", mesh=SimpleNamespace(size=1)) is False
    assert resolve_layers("auto", CFG, "cpu", mesh=SimpleNamespace(size=8)) is True
    assert resolve_layers("auto", CFG, "gpu") is True and resolve_layers("auto", CFG, "tpu")
    assert resolve_layers(True, CFG, "cpu") is True and resolve_layers(False, wide) is False
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match=f"scan_layers must be True, False or 'auto', got "
                                             f"{bad!r}"):
            TrainOptions(scan_layers=bad)


def test_build_model_compiles_the_initialisation_to_the_weights_an_eager_build_gives():
    """build_model runs GPT's initialisation as one jitted program; its weights equal those of
    GPT(...) built eagerly, bit for bit (XLA would otherwise fold the init's scale into the
    normal draw's constant: normal_init's barrier), untied and tied, float32 and bf16."""
    from flax import nnx

    from jaxbasics.gpt.model import GPT, normal_init

    for cfg, opts in ((CFG, TrainOptions(seed=3)),
                      (CFG.replace(tie_embeddings=True, qkv_bias=True),
                       TrainOptions(seed=4, bf16=True))):
        built = nnx.state(build_model(cfg, opts))
        eager = nnx.state(GPT(cfg, dtype=jnp.bfloat16 if opts.bf16 else jnp.float32,
                              rngs=nnx.Rngs(opts.seed)))
        assert jax.tree.structure(built) == jax.tree.structure(eager)
        for a, b in zip(jax.tree.leaves(built), jax.tree.leaves(eager), strict=True):
            assert a.dtype == b.dtype == jnp.float32
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # normal_init compiled gives the eager numbers (XLA may not fold its scale into the draw)
    key, shape = jax.random.key(0), (64, 96)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda k: normal_init(0.02)(k, shape))(key)),
                                  np.asarray(jax.random.normal(key, shape) * 0.02))


def test_build_model_compiles_one_initialisation_for_every_seed(caplog):
    """The seed is the compiled initialisation's argument, not a constant in it: a model shape
    is compiled once a process, whatever the seeds, and each seed gives its own weights."""
    import logging

    from flax import nnx

    cfg = CFG.replace(vocab_size=97)  # a shape no other test builds
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        first = [nnx.state(build_model(cfg, TrainOptions(seed=s))) for s in (5, 6, 2**32 - 1)]
    compiles = [r for r in caplog.records if "Compiling jit(_initial_state)" in r.getMessage()]
    assert len(compiles) == 1, [r.getMessage() for r in caplog.records]
    kernels = [np.asarray(s["head"]["kernel"][...]) for s in first]
    assert not (kernels[0] == kernels[1]).all() and not (kernels[1] == kernels[2]).all()
    again = nnx.state(build_model(cfg, TrainOptions(seed=6)))
    np.testing.assert_array_equal(np.asarray(again["head"]["kernel"][...]), kernels[1])


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_schedule_warms_up_from_the_first_update_then_decays(kind):
    opts = TrainOptions(steps=1000, warmup_steps=100, learning_rate=1e-3, min_lr_ratio=0.1,
                        schedule=kind)
    lr = learning_rate_schedule(opts)
    points = [0, 1, 50, 99, 100, 550, 999, 1000, 1200]
    np.testing.assert_allclose([float(lr(s)) for s in points],
                               [reference_lr(s, 1e-3, 1e-4, 100, 1000, kind) for s in points],
                               rtol=1e-5)
    assert float(lr(0)) == pytest.approx(1e-3 / 101)  # the first update is not at 0


def test_one_step_and_a_warmup_longer_than_the_run_have_a_schedule():
    """optax refused --steps 1 ('cosine_decay_schedule requires positive decay_steps')."""
    one = learning_rate_schedule(TrainOptions(steps=1, warmup_steps=0, learning_rate=1e-3))
    assert float(one(0)) == pytest.approx(1e-3)  # no warmup: the first step at the peak
    cold = learning_rate_schedule(TrainOptions(steps=4, warmup_steps=0, learning_rate=1e-3,
                                               min_lr_ratio=0.1))
    np.testing.assert_allclose([cold(s) for s in range(5)], [1e-3 * (0.1 + 0.9 * (1 + np.cos(
        np.pi * s / 4)) / 2) for s in range(5)], rtol=1e-5)
    long = learning_rate_schedule(TrainOptions(steps=3, warmup_steps=10, learning_rate=1e-3))
    np.testing.assert_allclose([long(s) for s in range(3)], [1e-3 / 11, 2e-3 / 11, 3e-3 / 11],
                               rtol=1e-5)
    with pytest.raises(ValueError, match="schedule must be one of cosine, linear, constant"):
        TrainOptions(schedule="step")
    table = {"w": {"kernel": ParamInfo(("embed", "mlp"), (2, 2), "w")}}
    tx = make_optimizer(TrainOptions(steps=1, warmup_steps=0), table)
    params = {"w": {"kernel": jnp.ones((2, 2))}}
    updates, _ = tx.update(params, tx.init(params), params)
    assert float(jnp.abs(updates["w"]["kernel"]).max()) > 0  # the one step moves the weights


def _unequal_masks(batch_size: int = 16):
    """An addition batch whose first half labels 2 tokens a row and second half all 4."""
    x, y = AdditionTask(2).batch(0, batch_size)
    y = y.copy()
    y[: batch_size // 2, :-2] = IGNORE
    labelled = (y != IGNORE).sum(axis=1)
    assert labelled[0] == 2 and labelled[-1] == 4  # micro-batches of 16 and 32 labelled tokens
    return x, y


def test_accumulating_micro_batches_of_unequal_masks_equals_one_full_batch_step():
    """Token-weighted accumulation: two micro-batches of 16 and 32 labelled tokens make the
    update of the full batch (the mean over its 48 tokens), not the mean of the two
    micro-batch means (optax.MultiSteps' rule, which this checks would be wrong by far more
    than float32 rounding)."""
    x, y = _unequal_masks()
    key = jax.random.key(0)
    graphdef, params = split_params(build_model(CFG, TrainOptions()))
    # SGD, whose update is the gradient scaled: Adam's first update divides each gradient entry
    # by its own size, which magnifies float32 rounding in entries near zero
    tx = optax.sgd(0.5)
    full, _, m_full = make_gpt_train_step(graphdef, tx, donate=False)(
        params, tx.init(params), x, y, key)
    acc, _, m_acc = make_gpt_train_step(graphdef, tx, accumulate=True, donate=False)(
        params, tx.init(params), x.reshape(2, 8, -1), y.reshape(2, 8, -1), jnp.stack([key, key]))
    # float32 rounding: the sums run in another order (the update moves weights by up to 0.4)
    chex.assert_trees_all_close(acc, full, rtol=0, atol=2e-7)
    np.testing.assert_allclose(m_acc["loss"], m_full["loss"], rtol=1e-6)
    np.testing.assert_allclose(m_acc["grad_norm"], m_full["grad_norm"], rtol=1e-5)
    # the mean of micro-batch means, one optax.MultiSteps update
    multi = optax.MultiSteps(tx, every_k_schedule=2)
    step = make_gpt_train_step(graphdef, multi, donate=False)
    p, s = params, multi.init(params)
    for half in (slice(0, 8), slice(8, 16)):
        p, s, _ = step(p, s, x[half], y[half], key)
    off = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(p),
                                                           jax.tree.leaves(full), strict=True))
    assert off > 1e-4
    with pytest.raises(ValueError, match=r"xs and ys must be \(K, B, T\) and keys \(K\), got "
                       r"xs \(16, 9\), ys \(16, 9\), keys \(\)"):
        make_gpt_train_step(graphdef, tx, accumulate=True, donate=False)(
            params, tx.init(params), x, y, key)


class _SplitTask(AdditionTask):
    """Micro-batch i (of ``rows`` rows) is half of the 2·rows batch i // 2 of the addition
    task, with the unequal masks of :func:`_unequal_masks`: two micro-batches of it are one
    full batch."""

    def batch(self, step, batch_size):
        x, y = AdditionTask.batch(self, step // 2, 2 * batch_size)
        y = y.copy()
        y[:batch_size, :-2] = IGNORE
        half = slice(0, batch_size) if step % 2 == 0 else slice(batch_size, 2 * batch_size)
        return x[half], y[half]


class _FullTask(_SplitTask):
    def batch(self, step, batch_size):
        x, y = zip(*(_SplitTask.batch(self, 2 * step + i, batch_size // 2) for i in range(2)),
                   strict=True)
        return np.concatenate(x), np.concatenate(y)


def test_training_with_accumulation_equals_training_on_the_full_batches():
    """train(accumulate=2) (what ``jaxbasics train --accumulate 2`` runs) with two updates per
    call, then one (both programs: call_sizes(0, 3) with K=2 is [2, 1]), on micro-batches of
    unequal masks: the losses and parameters of training on the concatenated batches, to
    float32 rounding."""
    opts = TrainOptions(steps=3, batch_size=8, warmup_steps=1)
    full = train(CFG, _FullTask(2), dataclasses.replace(opts, batch_size=16))
    acc = train(CFG, _SplitTask(2), dataclasses.replace(opts, accumulate=2, steps_per_call=2))
    np.testing.assert_allclose([r["loss"] for r in acc.history],
                               [r["loss"] for r in full.history], rtol=2e-6)
    # AdamW's first updates divide each gradient entry by its own size, magnifying float32
    # rounding in entries near zero to ~2e-5 (of updates ~1e-3; MultiSteps' rule is off by 1e-2)
    chex.assert_trees_all_close(acc.params, full.params, rtol=0, atol=1e-4)


def test_addition_batches_mask_the_prompt_and_are_reproducible():
    task = AdditionTask(3, seed=1)
    x, y = task.batch(5, 4)
    assert x.shape == y.shape == (4, 12)
    assert (y[:, :7] == IGNORE).all() and (y[:, 7:] >= 0).all()
    text = task.tokenizer.decode(list(x[0]) + [int(y[0, -1])])
    a, b, s = int(text[:3]), int(text[4:7]), text[8:12]
    assert s[::-1] == f"{a + b:04d}"
    chex.assert_trees_all_equal(task.batch(5, 4), (x, y))
    prompts, _ = task.test_prompts()
    train_pairs = {task.tokenizer.decode(r[:8]) for r in task.batch(0, 4000)[0]}
    assert not train_pairs & {task.tokenizer.decode(p) for p in prompts}  # held out


LEARN = """
import json
from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.data import AdditionTask
from jaxbasics.gpt.train import TrainOptions, addition_accuracy, train

task = AdditionTask(2)
# lr 3e-3 converges with margin on every seed tried (0-3: 94.5-100 % held out); 1e-2 sat on
# the edge, 72-99 % depending on the CPU's float rounding
opts = TrainOptions(steps=600, batch_size=64, learning_rate=3e-3, warmup_steps=30,
                    steps_per_call=10)  # the same updates, fewer calls
result = train(GPTConfig(vocab_size=256, context_length=16, emb_dim=64, n_heads=4, n_layers=2,
                         drop_rate=0.0), task, opts)
print(json.dumps({"losses": [r["loss"] for r in result.history],
                  "accuracy": addition_accuracy(result.model, task)[0]}))
"""


@pytest.mark.slow
def test_training_lowers_the_loss_and_learns_two_digit_addition():
    """600 updates: bound by running them, not by compiling, so in a process of its own at
    XLA's default optimisation level (a third less time than the level 0 of these tests)."""
    import json
    import os

    from helpers import run_python

    flags = os.environ.get("XLA_FLAGS", "").replace("--xla_backend_optimization_level=0", "")
    done = run_python(LEARN, env={**os.environ, "XLA_FLAGS": flags.strip()})
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout.strip().splitlines()[-1])
    losses = r["losses"]
    assert len(losses) == 600 and np.mean(losses[:5]) > 3.0  # ln 256 = 5.5 at the start
    assert np.mean(losses[-20:]) < 0.05 * np.mean(losses[:5])
    assert r["accuracy"] > 0.9  # held-out sums; guessing would get 1 in 1,000


@pytest.mark.slow
@RESUME
def test_interrupted_run_resumed_from_checkpoint_ends_with_the_same_parameters(tmp_path):
    task = AdditionTask(2)
    cfg = CFG.replace(drop_rate=0.1)  # dropout keys must line up too
    opts = dataclasses.replace(SPC_OPTS, accumulate=2)
    whole = _uninterrupted(2)
    first = train(cfg, task, opts, run_dir=tmp_path, stop_after=4)
    assert first.step == 4
    resumed = train(cfg, task, opts, run_dir=tmp_path, resume=True)
    assert resumed.step == 11 and len(resumed.history) == 11
    chex.assert_trees_all_equal(resumed.params, whole.params)
    chex.assert_trees_all_equal(resumed.opt_state, whole.opt_state)


KILLED_RUN = """
import os, signal, sys
import orbax.checkpoint as ocp
from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.data import AdditionTask
from jaxbasics.gpt.train import TrainOptions, train

where, run_dir = sys.argv[1], sys.argv[2]
saves = []

def kill_at_second(real):
    def patched(*args, **kwargs):
        if where == "sidecar" and not str(args[1]).endswith("run.json"):
            return real(*args, **kwargs)
        saves.append(1)
        if len(saves) == 2 and where == "sidecar":  # step 10's arrays written, not committed
            os.kill(os.getpid(), signal.SIGKILL)
        out = real(*args, **kwargs)
        if len(saves) == 2:  # step 10's arrays being written (orbax writes in a thread)
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    return patched

if where == "arrays":
    ocp.CheckpointManager.save = kill_at_second(ocp.CheckpointManager.save)
else:
    os.replace = kill_at_second(os.replace)
train(GPTConfig(vocab_size=256, context_length=16, emb_dim=64, n_heads=4, n_layers=2,
                drop_rate=0.1), AdditionTask(2),
      TrainOptions(steps=11, batch_size=8, warmup_steps=2, save_every=5, accumulate=2),
      run_dir=run_dir)
"""


@pytest.mark.slow
@RESUME
def test_a_save_killed_or_interrupted_midway_resumes_from_the_last_complete_checkpoint(
        tmp_path, monkeypatch):
    """kill -9 while step 10's arrays are written, or after they are but before run.json names
    them: resuming continues from step 5 (a leftover step 10 directory stopped the next save
    with orbax's 'Checkpoint for step 10 already exists'). Ctrl-C during a save lets it finish:
    the run stops with that step saved (it raised inside orbax's wait and saved the step twice)."""
    import subprocess
    import sys

    import orbax.checkpoint as ocp

    from jaxbasics.gpt import checkpoint

    task, cfg = AdditionTask(2), CFG.replace(drop_rate=0.1)
    opts = dataclasses.replace(SPC_OPTS, accumulate=2)  # the resume test's programs
    runs = {w: subprocess.Popen([sys.executable, "-c", KILLED_RUN, w, str(tmp_path / w)],
                                stderr=subprocess.PIPE, text=True) for w in ("arrays", "sidecar")}
    whole = _uninterrupted(2)
    real_wait = ocp.CheckpointManager.wait_until_finished

    def ctrl_c_during_the_save(mgr):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C arrives while the arrays are written
        return real_wait(mgr)

    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", ctrl_c_during_the_save)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, task, opts, run_dir=tmp_path / "ctrl-c")
    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", real_wait)
    assert checkpoint.load_meta(tmp_path / "ctrl-c")["step"] == 5
    for where, proc in runs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, err
        assert checkpoint.load_meta(tmp_path / where)["step"] == 5
    assert (tmp_path / "sidecar" / "checkpoints" / "10").is_dir()  # complete, never committed
    for run in ("arrays", "sidecar", "ctrl-c"):
        resumed = train(cfg, task, opts, run_dir=tmp_path / run, resume=True)
        assert [r["step"] for r in resumed.history] == list(range(1, 12)), run
        chex.assert_trees_all_equal(resumed.params, whole.params)


def test_interrupts_are_held_back_inside_a_save_and_delivered_after_it():
    from jaxbasics.gpt.checkpoint import interrupts_deferred

    reached = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            with interrupts_deferred():  # nested: delivered once, after the outer block
                signal.raise_signal(signal.SIGINT)
                reached.append("inner")
            reached.append("outer")
    assert reached == ["inner", "outer"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_train_loop_is_k_calls_of_the_step():
    """One lax.scan over K stacked batches makes the same updates as K step calls."""
    task = AdditionTask(2)
    model = build_model(CFG.replace(drop_rate=0.1), TrainOptions())
    graphdef, params = split_params(model)
    tx = make_optimizer(TrainOptions(steps=10, warmup_steps=2), parameter_table(model))
    batches = [task.batch(i, 8) for i in range(3)]
    keys = jnp.stack([jax.random.key(i) for i in range(3)])
    step = make_gpt_train_step(graphdef, tx, donate=False)
    p, s, losses = params, tx.init(params), []
    for (x, y), key in zip(batches, keys, strict=True):
        p, s, m = step(p, s, x, y, key)
        losses.append(m["loss"])
    xs, ys = (np.stack(a) for a in zip(*batches, strict=True))
    p3, s3, m3 = make_gpt_train_loop(graphdef, tx, donate=False)(params, tx.init(params), xs, ys,
                                                                 keys)
    assert m3["loss"].shape == m3["grad_norm"].shape == (3,)
    # to float32 rounding: under this suite's XLA flags (tests/conftest.py) a fused kernel may
    # round an update inside the scan and alone differently in the last bit; with XLA's
    # default emitters they are bit-identical (test_k_update_calls_are_bit_identical_...)
    np.testing.assert_allclose(m3["loss"], losses, rtol=1e-6)
    chex.assert_trees_all_close(p3, p, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(s3, s, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"xs and ys must be \(N, B, T\) and keys \(N\), got "
                       r"xs \(3, 8, 9\), ys \(3, 8, 9\), keys \(2,\)"):
        make_gpt_train_loop(graphdef, tx, donate=False)(params, tx.init(params), xs, ys, keys[:2])


@pytest.mark.slow
@RESUME
@pytest.mark.parametrize("accumulate", [1, 2])
def test_steps_per_call_changes_nothing_but_the_calls(tmp_path, accumulate):
    """The run of one call per step (accumulate=1: one jitted step per update; accumulate=2:
    one call per update's two micro-batches), with dropout and checkpoints that do not fall on
    a call boundary; a run may resume with another steps_per_call. The same steps and records;
    the numbers to float32 rounding under this suite's XLA flags (tests/conftest.py), bit for
    bit under XLA's default ones (test_k_update_calls_are_bit_identical_under_default_xla)."""
    task = AdditionTask(2)
    cfg = CFG.replace(drop_rate=0.1)
    opts = dataclasses.replace(SPC_OPTS, accumulate=accumulate)
    whole = _uninterrupted(accumulate)
    looped = train(cfg, task, dataclasses.replace(opts, steps_per_call=4), run_dir=tmp_path,
                   stop_after=6)
    assert [r["step"] for r in looped.history] == list(range(1, 7))
    # resumed at step 6 with one update per call: the single-update program only (a resume
    # into a K-update loop is test_ctrl_c_inside_a_multi_step_call_saves...)
    resumed = train(cfg, task, dataclasses.replace(opts, steps_per_call=1), run_dir=tmp_path,
                    resume=True)
    assert [r["step"] for r in resumed.history] == [r["step"] for r in whole.history]
    np.testing.assert_allclose([r["loss"] for r in resumed.history],
                               [r["loss"] for r in whole.history], rtol=1e-6)
    chex.assert_trees_all_close(resumed.params, whole.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(resumed.opt_state, whole.opt_state, rtol=1e-5, atol=1e-6)


BIT_IDENTICAL = """
import json
import jax, jax.numpy as jnp, numpy as np
from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.data import AdditionTask
from jaxbasics.gpt.model import parameter_table
from jaxbasics.gpt.train import (TrainOptions, build_model, make_gpt_train_loop,
                                 make_gpt_train_step, make_optimizer)
from jaxbasics.params import split_params

cfg = GPTConfig(vocab_size=256, context_length=16, emb_dim=64, n_heads=4, n_layers=2,
                drop_rate=0.1)
model = build_model(cfg, TrainOptions())
graphdef, params = split_params(model)
tx = make_optimizer(TrainOptions(steps=10, warmup_steps=2), parameter_table(model))
task = AdditionTask(2)
# 3 updates of 2 micro-batches of 8 rows each: (3, 2, 8, T), keys (3, 2)
batches = [[task.batch(2 * i + j, 8) for j in range(2)] for i in range(3)]
xs = np.stack([np.stack([x for x, _ in b]) for b in batches])
ys = np.stack([np.stack([y for _, y in b]) for b in batches])
keys = jnp.stack([jnp.stack([jax.random.key(2 * i + j) for j in range(2)]) for i in range(3)])
step = make_gpt_train_step(graphdef, tx, accumulate=True, donate=False)
p, s, losses = params, tx.init(params), []
for i in range(3):
    p, s, m = step(p, s, xs[i], ys[i], keys[i])
    losses.append(float(m["loss"]))
p3, s3, m3 = make_gpt_train_loop(graphdef, tx, accumulate=True, donate=False)(
    params, tx.init(params), xs, ys, keys)
same = lambda a, b: all(np.array_equal(x, y) for x, y in
                        zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
print(json.dumps({"losses": [float(v) for v in m3["loss"]] == losses,
                  "params": same(p3, p), "opt_state": same(s3, s)}))
"""


@pytest.mark.slow
def test_k_update_calls_are_bit_identical_under_default_xla():
    """With XLA's default fusion emitters, as users run it, three updates in one call (a
    lax.scan) equal three calls of the step bit for bit, with dropout and two micro-batches an
    update: losses, parameters and optimizer state (docs/performance.md says so; train's
    K-update calls, checkpoints and resumes around them are the same programs, tested above).
    In a process of its own, since this suite compiles with the older emitters
    (tests/conftest.py); LLVM's optimisation level stays at the suite's 0, which changes no
    value."""
    import json
    import os

    from helpers import run_python

    flags = os.environ.get("XLA_FLAGS", "").replace("--xla_cpu_use_fusion_emitters=false", "")
    done = run_python(BIT_IDENTICAL, env={**os.environ, "XLA_FLAGS": flags.strip()})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "losses": True, "params": True, "opt_state": True}


@functools.cache
def _uninterrupted_k4():
    """The uninterrupted run of the Ctrl-C tests: 8 updates, 4 per call."""
    return train(CFG, AdditionTask(2), TrainOptions(steps=8, batch_size=8, warmup_steps=2,
                                                    steps_per_call=4))


@RESUME
def test_ctrl_c_inside_a_multi_step_call_saves_a_checkpoint_that_resumes_exactly(tmp_path):
    """Interrupted from on_step after the 2nd of a call's 4 updates: the parameters already hold
    all 4, and so must the saved step count, or the resumed run would repeat two updates."""
    task = AdditionTask(2)
    opts = TrainOptions(steps=8, batch_size=8, warmup_steps=2, steps_per_call=4)
    whole = _uninterrupted_k4()

    def interrupt(step, _record):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(CFG, task, opts, run_dir=tmp_path, on_step=interrupt)
    resumed = train(CFG, task, opts, run_dir=tmp_path, resume=True)
    assert [r["step"] for r in resumed.history] == list(range(1, 9))
    chex.assert_trees_all_equal(resumed.params, whole.params)


@RESUME
def test_ctrl_c_while_a_call_is_reported_keeps_its_records_in_the_checkpoint(tmp_path,
                                                                           monkeypatch):
    """Interrupted after a 4-update call returned but before its records joined the history
    (here: while the 6th update's record is made; in use, while waiting for the losses): the
    checkpoint holds step 8 and must hold the history of all 8 steps, as an uninterrupted run
    has it, not stop at step 4."""
    from jaxbasics.gpt import train as gpt_train

    task = AdditionTask(2)
    opts = TrainOptions(steps=8, batch_size=8, warmup_steps=2, steps_per_call=4)
    whole = _uninterrupted_k4()
    real = gpt_train.learning_rate_schedule
    interrupted = []

    def schedule_once_interrupted(o):
        lr = real(o)

        def at(i):
            if isinstance(i, int) and i == 5 and not interrupted:
                interrupted.append(i)
                raise KeyboardInterrupt
            return lr(i)
        return at

    monkeypatch.setattr(gpt_train, "learning_rate_schedule", schedule_once_interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(CFG, task, opts, run_dir=tmp_path)
    monkeypatch.setattr(gpt_train, "learning_rate_schedule", real)
    assert interrupted == [5]
    resumed = train(CFG, task, opts, run_dir=tmp_path, resume=True)  # nothing left to run
    assert resumed.step == 8
    assert [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in resumed.history] == [
        (r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in whole.history]


def test_resume_refuses_a_different_configuration(tmp_path, monkeypatch):
    """Refused from the sidecar alone, before a model is built, naming only what differs."""
    from jaxbasics.gpt import train as gpt_train

    task = AdditionTask(2)
    opts = TrainOptions(steps=8, batch_size=8, warmup_steps=2, steps_per_call=4)  # as above
    train(CFG, task, opts, run_dir=tmp_path)
    monkeypatch.setattr(gpt_train, "build_model", lambda *a: pytest.fail("built a model"))
    with pytest.raises(ValueError, match=r"cannot resume .* its options differ from this run's "
                       r"\(batch_size: 8 there, 16 here\)"):
        train(CFG, task, dataclasses.replace(opts, batch_size=16, steps=9), run_dir=tmp_path,
              resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        train(CFG, task, opts, run_dir=tmp_path / "empty", resume=True)


def test_a_checked_gpt_step_names_token_ids_and_labels_out_of_range():
    """Unchecked, an id >= vocab_size is clamped by the embedding lookup: a loss, no error."""
    from jaxbasics.step import StepCheckError

    model = build_model(CFG.replace(drop_rate=0.1), TrainOptions())  # as the test above: its
    graphdef, params = split_params(model)  # plain step is a compilation-cache hit here
    tx = make_optimizer(TrainOptions(steps=10, warmup_steps=2), parameter_table(model))
    x, y = AdditionTask(2).batch(0, 8)
    key = jax.random.key(0)
    step = make_gpt_train_step(graphdef, tx, donate=False, checked=True)
    _, _, m = step(params, tx.init(params), x, y, key)
    _, _, want = make_gpt_train_step(graphdef, tx, donate=False)(params, tx.init(params), x, y, key)
    assert m == want
    for bad_x, bad_y, message in (
            (x.copy() + 300 * (np.arange(x.size).reshape(x.shape) == 5), y,
             r"x \(token ids\) must lie in \[0, 255\], got values from \d+ to 3\d\d \(1 out"),
            (x, np.where(y == IGNORE, -2, y), r"y \(labels\) must lie in \[0, 255\] or -1, got "
                                              r"values from -2 to")):
        with pytest.raises(StepCheckError, match=message):
            step(params, tx.init(params), bad_x, bad_y, key)


def test_bf16_training_step_runs_with_float32_state():
    task = AdditionTask(2)
    opts = TrainOptions(steps=20, batch_size=16, warmup_steps=2, bf16=True, learning_rate=3e-3)
    result = train(CFG, task, opts)
    assert {leaf.dtype for leaf in jax.tree.leaves(result.params)} == {jnp.dtype("float32")}
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_text_dataset_windows_and_errors(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("hello jax — " * 50, encoding="utf-8")
    ds = TextDataset(path, 16)
    x, y = ds.batch(0, 3)
    assert x.shape == (3, 16)
    chex.assert_trees_all_equal(x[:, 1:], y[:, :-1])
    with pytest.raises(FileNotFoundError, match="text file not found"):
        TextDataset(tmp_path / "missing.txt", 16)
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00" * 100)
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        TextDataset(tmp_path / "bin", 16)
    (tmp_path / "short").write_text("abc")
    with pytest.raises(ValueError, match="has 3 bytes; need more than context_length"):
        TextDataset(tmp_path / "short", 16)


def test_every_text_window_is_drawn_the_last_one_too(tmp_path):
    """Starts run from 0 to len - C - 1, whose label is the split's last byte (it was never
    drawn: the last start was excluded)."""
    path = tmp_path / "t.txt"
    path.write_bytes(bytes(range(27, 127)))  # 100 distinct ASCII bytes: a start is its first
    ds = TextDataset(path, 16)
    starts = {int(x[0]) - 27 for step in range(200) for x in ds.batch(step, 16)[0]}
    last = len(ds.train) - 16 - 1
    assert starts == set(range(last + 1))


@pytest.mark.parametrize("changes, fragment", [
    ({"steps": 0}, "steps must be a positive integer"),
    ({"warmup_steps": -1}, "warmup_steps must be an int >= 0, got -1"),
    ({"learning_rate": 2.0}, "learning_rate must be in [0, 1], got 2.0"),
    ({"learning_rate": 0.0}, "learning_rate must be > 0, got 0.0"),
    ({"learning_rate": float("nan")}, "learning_rate must be in [0, 1], got nan"),
    ({"b1": 1.0}, "b1 must be in [0, 1), got 1.0"),
    ({"b2": -0.5}, "b2 must be in [0, 1), got -0.5"),
    ({"clip_norm": 0.0}, "clip_norm must be a number > 0 (inf: no clipping), got 0.0"),
    ({"clip_norm": float("nan")}, "clip_norm must be a number > 0 (inf: no clipping), got nan"),
    ({"accumulate": 0}, "accumulate must be a positive integer"),
    ({"steps_per_call": 0}, "steps_per_call must be a positive integer or 'auto', got 0"),
    ({"steps_per_call": "4"}, "steps_per_call must be a positive integer or 'auto', got '4'"),
    ({"seed": -1}, "seed must be an integer in [0, 2**32), got -1"),
    ({"seed": 2**32}, "seed must be an integer in [0, 2**32), got 4294967296"),
    ({"seed": 1.5}, "seed must be an integer in [0, 2**32), got 1.5"),
])
def test_bad_train_options(changes, fragment):
    with pytest.raises(ValueError) as info:
        TrainOptions(**changes)
    assert fragment in str(info.value)


def test_vocab_mismatch_is_refused():
    with pytest.raises(ValueError, match="tokenizer has 256 ids but cfg.vocab_size=100"):
        train(CFG.replace(vocab_size=100), AdditionTask(2), TrainOptions(steps=2, warmup_steps=0))


def test_optax_adamw_is_what_runs():
    """The optimizer chain is optax's: clip then adamw, nothing hand-written."""
    table = {"w": {"kernel": ParamInfo(("embed", "mlp"), (2, 2), "w")},
             "b": {"bias": ParamInfo(("mlp",), (2,), "b")}}
    tx = make_optimizer(TrainOptions(steps=10, warmup_steps=1), table)
    params = {"w": {"kernel": jnp.ones((2, 2))}, "b": {"bias": jnp.ones(2)}}
    grads = jax.tree.map(lambda p: 10 * p, params)  # global norm sqrt(600) > 1: clipped
    updates, _ = tx.update(grads, tx.init(params), params)
    ref = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(
        learning_rate_schedule(TrainOptions(steps=10, warmup_steps=1)), b1=0.9, b2=0.95,
        weight_decay=0.1, mask={"w": {"kernel": True}, "b": {"bias": False}}))
    chex.assert_trees_all_close(updates, ref.update(grads, ref.init(params), params)[0])


def test_step_keys_are_a_pure_function_of_seed_and_step_and_refuse_out_of_range_integers():
    data_of = jax.random.key_data
    np.testing.assert_array_equal(data_of(step_key(3, 7)), data_of(step_key(3, 7)))
    assert not np.array_equal(data_of(step_key(3, 7)), data_of(step_key(3, 8)))
    assert not np.array_equal(data_of(step_key(3, 7)), data_of(step_key(4, 7)))
    for seed, step, name, value in ((0, -1, "step", "-1"), (0, 2**32, "step", "4294967296"),
                                    (-5, 0, "seed", "-5"), (0, 1.0, "step", "1.0")):
        with pytest.raises(ValueError, match=rf"{name} must be an integer in \[0, 2\*\*32\), got {value}"):
            step_key(seed, step)
    for make in (lambda: AdditionTask(3, seed=-1), lambda: TextDataset("unused.txt", 16, seed=-1)):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\), got -1"):
            make()


def test_a_train_step_given_a_plain_integer_for_its_key_names_it_at_trace_time():
    # the model, optimizer and step of test_train_loop_is_k_calls_of_the_step: one program
    model = build_model(CFG.replace(drop_rate=0.1), TrainOptions())
    graphdef, params = split_params(model)
    tx = make_optimizer(TrainOptions(steps=10, warmup_steps=2), parameter_table(model))
    ids, _ = AdditionTask(2).batch(0, 8)
    step = make_gpt_train_step(graphdef, tx, donate=False)
    with pytest.raises(TypeError, match=r"key must be one JAX random key .*got int32 array of shape \(\)"):
        step(params, tx.init(params), ids, ids, 0)
    _, _, metrics = step(params, tx.init(params), ids, ids, jax.random.key(0))  # a key is fine
    assert np.isfinite(float(metrics["loss"]))


def test_a_damaged_run_sidecar_is_named_not_a_keyerror(tmp_path, capsys):
    from jaxbasics.cli import main
    from jaxbasics.gpt import checkpoint

    with pytest.raises(FileNotFoundError, match="run.json does not exist"):
        checkpoint.load_meta(tmp_path)
    sidecar = tmp_path / "run.json"
    for text, fragment in (("nope", "run.json is not a JSON file (Expecting value"),
                           ('{"step": 1}', "run.json lacks config, options, task: not a "
                                           "jaxbasics run sidecar"),
                           ("[1]", "run.json must hold a JSON object, got list: the run "
                                   "directory is damaged")):
        sidecar.write_text(text)
        with pytest.raises(ValueError) as info:
            checkpoint.load_meta(tmp_path)
        assert fragment in str(info.value)
    assert main(["generate", "--run", str(tmp_path), "--prompt", "1+1="]) == 2
    assert "jaxbasics generate: " in capsys.readouterr().err


@pytest.mark.parametrize("start, end, k, save_every, sizes", [
    (0, 11, 4, 5, [4, 1, 1, 1, 1, 1, 1, 1]),  # no call across the checkpoint at 5, nor the end
    (6, 16, 4, 500, [1, 1, 4, 4]),  # a resumed run aligns on multiples of K first
    (0, 20, 4, 10, [4, 4, 1, 1, 1, 1, 4, 4]),  # checkpoint at 10: single updates 8..11
    (0, 8, 4, 500, [4, 4]), (0, 3, 1, 500, [1, 1, 1]), (0, 7, 8, 500, [1] * 7),
    # auto: 4 from 50 steps on, the first update alone (its loss shows at once); else 1
    (0, 60, "auto", 500, [1, 1, 1, 1] + [4] * 14), (0, 49, "auto", 500, [1] * 49),
    (52, 60, "auto", 500, [4, 4]), (0, 60, "auto", 50, [1, 1, 1, 1] + [4] * 11 + [1] * 4 + [4, 4])])
def test_each_call_runs_k_updates_or_one_so_a_run_compiles_two_programs_at_most(
        start, end, k, save_every, sizes):
    from jaxbasics.gpt.train import call_sizes, resolve_steps_per_call

    opts = TrainOptions(steps=end, warmup_steps=0, steps_per_call=k, save_every=save_every)
    assert call_sizes(start, end, opts) == sizes
    assert sum(sizes) == end - start and set(sizes) <= {1, resolve_steps_per_call(opts)}


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                              monkeypatch):
    """The jitted step cannot refuse values it only sees at run time: the loop stops at the
    first non-finite loss, names the step, and saves nothing of it or after it."""
    from jaxbasics.gpt import checkpoint
    from jaxbasics.gpt import train as gpt_train

    real = gpt_train.lm_loss
    # a loss that turns NaN on a batch holding token 255 (never in the addition task's text)
    monkeypatch.setattr(gpt_train, "lm_loss", lambda model, x, y, key: real(model, x, y, key)
                        + jnp.where(jnp.any(x == 255), jnp.nan, 0.0))

    class Poisoned(AdditionTask):
        def batch(self, step, batch_size):
            x, y = super().batch(step, batch_size)
            if step == 4:  # the 5th update's batch
                x = x.copy()
                x[0, 0] = 255
            return x, y

    opts = TrainOptions(steps=8, batch_size=8, warmup_steps=2, save_every=2)
    with pytest.raises(gpt_train.NonFiniteError, match=rf"training stopped at step 5: its loss is "
                       rf"nan \(not finite\); the last good checkpoint, step 4, is kept in "
                       rf"{tmp_path}, nothing after it was saved"):
        train(CFG, Poisoned(2), opts, run_dir=tmp_path)
    meta = checkpoint.load_meta(tmp_path)
    from jaxbasics.gpt import metrics

    assert meta["step"] == 4 and [r["step"] for r in metrics.read(tmp_path)] == [1, 2, 3, 4]
    model = build_model(CFG, opts)
    graphdef, params = split_params(model)
    tx = make_optimizer(opts, parameter_table(model))
    step, restored, _ = checkpoint.restore(tmp_path, params, tx.init(params))
    assert step == 4 and all(np.isfinite(a).all() for a in jax.tree.leaves(restored))


class _FakeDevice:
    """What resolve_attention reads of a device: platform, kind, client's platform_version,
    compute capability."""

    def __init__(self, platform, kind, version, capability=None):
        self.platform, self.device_kind, self.compute_capability = platform, kind, capability
        self.client = type("Client", (), {"platform_version": version})()


def test_attention_auto_is_cudnn_exactly_where_cudnn_can_run():
    """``attention="auto"``: cuDNN flash attention on an NVIDIA GPU with bf16 compute, no
    dropout and one scale for all blocks; XLA's everywhere else. An explicit ``"cudnn"`` off
    an NVIDIA GPU is refused by name before any model is built."""
    from jaxbasics.gpt.train import resolve_attention

    cfg = GPTConfig(drop_rate=0.0)
    cuda = _FakeDevice("gpu", "NVIDIA H200", "cuda 13000", "9.0")
    assert resolve_attention("auto", cfg, True, cuda) == "cudnn"
    mesh = type("Mesh", (), {"shape": {"data": 2, "fsdp": 2, "tensor": 1}})()
    assert resolve_attention("auto", cfg, True, cuda, mesh) == "cudnn"  # heads whole
    assert resolve_attention("auto", cfg, False, cuda) == "xla"  # float32: no flash kernel
    assert resolve_attention("auto", cfg.replace(drop_rate=0.1), True, cuda) == "xla"
    assert resolve_attention("auto", cfg.replace(scale_attn_by_inverse_layer_idx=True), True,
                             cuda) == "xla"
    assert resolve_attention("xla", cfg, True, cuda) == "xla"
    volta = _FakeDevice("gpu", "Tesla V100-SXM2-16GB", "cuda 12030", "7.0")
    tensor = type("Mesh", (), {"shape": {"data": 2, "tensor": 2}})()
    for bad, why in ((dict(bf16=False), "bfloat16 or float16 compute (cuDNN's flash attention), "
                                        "got float32"),
                     (dict(drop_rate=0.1), "no dropout (cuDNN's kernel has none), got drop_rate 0.1"),
                     (dict(scale_attn_by_inverse_layer_idx=True), "one attention scale for every"),
                     (dict(emb_dim=96, n_heads=8), "a head size that is a multiple of 8 and at "
                                                   "most 128, got 12"),
                     (dict(emb_dim=512, n_heads=2), "a head size that is a multiple of 8 and at "
                                                    "most 128, got 256"),
                     (dict(device=volta), "an NVIDIA GPU of compute capability 8.0 or later, "
                                          "got 7.0 (Tesla V100-SXM2-16GB)"),
                     (dict(mesh=tensor), "heads kept whole on each device, got a mesh with "
                                         "tensor=2")):
        bf16, device, on = bad.pop("bf16", True), bad.pop("device", cuda), bad.pop("mesh", None)
        assert resolve_attention("auto", cfg.replace(**bad), bf16, device, on) == "xla"
        with pytest.raises(ValueError, match=re.escape(f"attention 'cudnn' needs {why}")):
            resolve_attention("cudnn", cfg.replace(**bad), bf16, device, on)
    for other in (_FakeDevice("gpu", "AMD Instinct MI300X", "rocm 60300"),
                  _FakeDevice("tpu", "TPU v5 lite", "PJRT C API"), jax.devices()[0]):
        assert resolve_attention("auto", cfg, True, other) == "xla"
        with pytest.raises(ValueError, match=r"attention 'cudnn' needs an NVIDIA GPU \(cuDNN\), "
                                             rf"but JAX runs on {other.platform}[ ;]"):
            resolve_attention("cudnn", cfg, True, other)
    with pytest.raises(ValueError, match=r"attention implementation must be one of .*'flash'"):
        TrainOptions(attention="flash")


def test_train_compiles_each_program_once_then_hands_freed_memory_back(monkeypatch):
    """5 steps of 2 a call: calls of 2, 2, 1 (two programs), each compiled before its first
    call and followed by one trim; glibc's malloc_trim is there on this Linux, and a C library
    without it is answered False."""
    import ctypes

    import jaxbasics.gpt.train as gpt_train

    trims = []
    monkeypatch.setattr(gpt_train, "release_free_memory", lambda: trims.append(1) or True)
    result = train(CFG, AdditionTask(2),
                   TrainOptions(steps=5, batch_size=4, warmup_steps=1, steps_per_call=2))
    assert len(result.history) == 5 and len(trims) == 2
    assert release_free_memory() is True
    monkeypatch.setattr(ctypes, "CDLL", lambda name: object())
    assert release_free_memory() is False
