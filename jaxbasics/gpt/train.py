"""Training GPT-2 the functional way (the chapter's model, trained): next-token
cross-entropy, AdamW with weight decay on matrices only, global-norm clipping, linear warmup
then cosine decay, optional bf16 compute, gradient accumulation, orbax checkpoints.

One optimisation step::

    loss(θ) = mean_t CE(GPT_θ(x)_t, y_t)          (positions labelled IGNORE excluded)
    g = clip(∇θ loss, max global norm)
    θ ← AdamW(θ, g; lr(step), β1, β2, weight decay on kernels and embeddings only)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxbasics import checks
from jaxbasics.gpt import checkpoint
from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.data import IGNORE, AdditionTask, TextDataset, step_key
from jaxbasics.gpt.generate import generate
from jaxbasics.gpt.model import GPT, remat_policy
from jaxbasics.losses import cross_entropy
from jaxbasics.params import split_params


@dataclass(frozen=True)
class TrainOptions:
    """Optimisation settings. Defaults suit the small models of the embedded task; GPT-2's own
    were lr 6e-4, β2 0.95, weight decay 0.1, clip 1.0 (as in nanoGPT)."""

    steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 1e-3  # 2e-3 stalled on a loss plateau for the default seed
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to learning_rate * min_lr_ratio
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    clip_norm: float = 1.0
    accumulate: int = 1  # micro-batches per optimizer update (optax.MultiSteps)
    bf16: bool = False  # bfloat16 compute, float32 parameters and optimizer state
    # see GPT: False, True/"full", "dots", a checkpoint policy name, or "auto" (resolve_remat)
    remat: bool | str = "auto"
    seed: int = 0
    save_every: int = 500
    # optimizer updates per compiled call (make_gpt_train_loop): fewer dispatches and, on CPU,
    # one fresh temporary buffer per call instead of per step; 1: one call per micro-batch
    steps_per_call: int = 1

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "accumulate", "save_every", "steps_per_call"):
            checks.positive_int(getattr(self, name), name)
        if not isinstance(self.warmup_steps, int) or not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must be an int in [0, steps={self.steps}), got "
                             f"{self.warmup_steps!r}")
        for name in ("learning_rate", "min_lr_ratio", "weight_decay"):
            checks.number_in(getattr(self, name), name, 0.0, 1.0)
        for name in ("b1", "b2"):  # Adam divides by 1 - β^t: β = 1 is refused
            checks.number_in(getattr(self, name), name, 0.0, 1.0, open_hi=True)
        resolve_remat(self.remat)
        checks.uint32(self.seed, "seed")
        if self.learning_rate == 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if (isinstance(self.clip_norm, bool) or not isinstance(self.clip_norm, int | float)
                or not self.clip_norm > 0):
            raise ValueError(f"clip_norm must be a number > 0 (inf: no clipping), got "
                             f"{self.clip_norm!r}")


def decay_mask(params: Any) -> Any:
    """True for the leaves weight decay applies to: matrices (``kernel``) and embedding tables;
    False for biases and LayerNorm scales. Decided by name, since stacking the blocks gives
    biases a second (layer) axis."""
    def is_matrix(path, _leaf) -> bool:
        return str(getattr(path[-1], "key", path[-1])) in ("kernel", "embedding")
    return jax.tree_util.tree_map_with_path(is_matrix, params)


def learning_rate_schedule(opts: TrainOptions) -> optax.Schedule:
    """Linear warmup from 0 to ``learning_rate`` over ``warmup_steps``, then cosine decay to
    ``learning_rate * min_lr_ratio`` at ``steps``."""
    return optax.warmup_cosine_decay_schedule(
        0.0, opts.learning_rate, max(opts.warmup_steps, 1), opts.steps,
        end_value=opts.learning_rate * opts.min_lr_ratio)


def make_optimizer(opts: TrainOptions) -> optax.GradientTransformation:
    """``clip_by_global_norm → adamw(schedule, mask=decay_mask)``, wrapped in
    ``optax.MultiSteps`` when ``accumulate > 1`` (gradients averaged over micro-batches)."""
    tx = optax.chain(
        optax.clip_by_global_norm(opts.clip_norm),
        optax.adamw(learning_rate_schedule(opts), b1=opts.b1, b2=opts.b2,
                    weight_decay=opts.weight_decay, mask=decay_mask))
    return optax.MultiSteps(tx, every_k_schedule=opts.accumulate) if opts.accumulate > 1 else tx


def resolve_remat(remat: bool | str, backend: str | None = None) -> bool | str:
    """The ``remat`` setting to build the model with: ``"auto"`` is ``"dots"`` on CPU, where
    storing the blocks' elementwise intermediates costs more than recomputing them (the
    GPT-2 step is 1.1-1.4x faster with it at every size measured: README, "Benchmarks"), and
    ``False`` on GPU/TPU until measured there; any other value is checked and returned."""
    if remat == "auto":
        return "dots" if (backend or jax.default_backend()) == "cpu" else False
    remat_policy(remat)
    return remat


def build_model(cfg: GPTConfig, opts: TrainOptions) -> GPT:
    """The GPT for ``cfg`` with the compute dtype and remat setting of ``opts``."""
    return GPT(cfg, dtype=jnp.bfloat16 if opts.bf16 else jnp.float32,
               remat=resolve_remat(opts.remat), rngs=nnx.Rngs(opts.seed))


def lm_loss(model: GPT, x: jax.Array, y: jax.Array, key: jax.Array | None) -> jax.Array:
    """Mean next-token cross-entropy of ``model(x)`` against ``y`` (B, T); labels equal to
    ``IGNORE`` do not count. Dropout is on when ``key`` is given."""
    logits = model(x, deterministic=key is None, rng=key)
    return cross_entropy(logits, y, ignore_index=IGNORE)


def _step_body(graphdef: nnx.GraphDef, tx: optax.GradientTransformation) -> Callable:
    """The pure step ``(params, opt_state, x, y, key) -> (params, opt_state, metrics)``."""
    def step(params, opt_state, x, y, key):
        if key is not None:  # at trace time: a plain int would fail deep inside dropout
            checks.random_key(key, "key")

        def loss_fn(p):
            return lm_loss(nnx.merge(graphdef, p), x, y, key)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state,
                {"loss": loss, "grad_norm": optax.tree.norm(grads)})

    return step


def make_gpt_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, *,
                        donate: bool = True, shardings: tuple | None = None) -> jax.stages.Wrapped:
    """Compiled ``(params, opt_state, x, y, key) -> (params, opt_state, {"loss", "grad_norm"})``.

    ``shardings=(params, opt_state, batch, replicated)`` compiles it for a device mesh
    (see :func:`sharded_state`); without it, JAX's default placement.
    """
    step = _step_body(graphdef, tx)
    donate_argnums = (0, 1) if donate else ()
    if shardings is None:
        return jax.jit(step, donate_argnums=donate_argnums)
    p_sh, o_sh, b_sh, rep = shardings
    return jax.jit(step, donate_argnums=donate_argnums,
                   in_shardings=(p_sh, o_sh, b_sh, b_sh, rep), out_shardings=(p_sh, o_sh, rep))


def make_gpt_train_loop(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, *,
                        donate: bool = True, shardings: tuple | None = None
                        ) -> jax.stages.Wrapped:
    """K steps of :func:`make_gpt_train_step` in one compiled call, as one ``jax.lax.scan``:
    ``(params, opt_state, xs, ys, keys) -> (params, opt_state, {"loss": (K,), "grad_norm":
    (K,)})`` with ``xs``, ``ys`` of shape (K, B, T) and ``keys`` (K,) (step i uses ``xs[i]``,
    ``ys[i]``, ``keys[i]``), the same updates as K calls of the step.

    No Python runs between the steps, and XLA plans the step's temporary buffers once per
    call instead of once per step: on CPU every call takes that buffer fresh from the
    allocator, its pages faulted in anew, which a K-step call pays once (README, "Benchmarks").
    ``shardings`` as for :func:`make_gpt_train_step`; the batches' leading K axis is not split.
    """
    step = _step_body(graphdef, tx)

    def loop(params, opt_state, xs, ys, keys):
        k = xs.shape[0] if xs.ndim == 3 else None
        if k is None or ys.shape != xs.shape or keys.shape != (k,):
            raise ValueError(f"xs and ys must be (K, B, T) and keys (K,), got xs {xs.shape}, "
                             f"ys {ys.shape}, keys {keys.shape}")

        def body(carry, batch):
            params, opt_state, metrics = step(*carry, *batch)
            return (params, opt_state), metrics

        (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), (xs, ys, keys))
        return params, opt_state, metrics

    donate_argnums = (0, 1) if donate else ()
    if shardings is None:
        return jax.jit(loop, donate_argnums=donate_argnums)
    from jaxbasics.gpt import sharding

    p_sh, o_sh, b_sh, rep = shardings
    stacked = sharding.batch_sharding(b_sh.mesh, stacked=True)
    return jax.jit(loop, donate_argnums=donate_argnums,
                   in_shardings=(p_sh, o_sh, stacked, stacked, rep), out_shardings=(p_sh, o_sh, rep))


def sharded_state(params: Any, opt_state: Any, tx: optax.GradientTransformation, mesh: Any
                  ) -> tuple[Any, Any, tuple]:
    """Place ``params`` and ``opt_state`` on ``mesh`` (parameter rules of
    :mod:`jaxbasics.gpt.sharding`; Adam moments follow their parameter) and return them with the
    ``shardings`` tuple for :func:`make_gpt_train_step`."""
    from jax.sharding import NamedSharding, PartitionSpec

    from jaxbasics.gpt import sharding

    rep = NamedSharding(mesh, PartitionSpec())
    p_sh = sharding.param_shardings(params, mesh)
    o_sh = optax.tree_map_params(tx, lambda _, s: s, opt_state, p_sh,
                                 transform_non_params=lambda _: rep)
    return (jax.device_put(params, p_sh), jax.device_put(opt_state, o_sh),
            (p_sh, o_sh, sharding.batch_sharding(mesh), rep))


def addition_accuracy(model: GPT, task: AdditionTask, limit: int = 500
                      ) -> tuple[float, list[tuple[str, str, str]]]:
    """Exact-match accuracy of greedy answers on held-out sums, and a few
    ``(prompt, expected, got)`` examples (answers shown in normal digit order)."""
    prompts, answers = task.test_prompts(limit)
    out = np.asarray(generate(model, prompts, answers.shape[1]))[:, task.prompt_len:]
    correct = (out == answers).all(axis=1)
    examples = [(task.tokenizer.decode(p)[:-1], task.decode_answer(a)[:-1][::-1],
                 task.decode_answer(o).split("\n")[0][::-1])
                for p, a, o in zip(prompts[:5], answers[:5], out[:5], strict=True)]
    return float(correct.mean()), examples


@dataclass
class TrainResult:
    """What :func:`train` returns: the model, its params and optimizer state, the step
    reached and the per-step history."""
    model: GPT
    params: Any
    opt_state: Any
    step: int
    history: list[dict] = field(default_factory=list)


def train(cfg: GPTConfig, task: AdditionTask | TextDataset, opts: TrainOptions, *,
          run_dir: str | Path | None = None, resume: bool = False, stop_after: int | None = None,
          on_step: Callable[[int, dict], None] | None = None, mesh: Any = None) -> TrainResult:
    """Train a fresh (or, with ``resume``, the checkpointed) model on ``task``.

    Batches and dropout keys are pure functions of ``(seed, step)``, so a resumed run ends
    with the same parameters as an uninterrupted one. ``stop_after`` ends the run after that
    many steps *of this call* (saving a checkpoint); Ctrl-C also saves before stopping.
    ``on_step(step, record)`` is called after each optimizer update with
    ``{"step", "loss", "grad_norm", "lr", "tokens_per_s"}``. With a ``mesh``
    (:func:`jaxbasics.sharding.make_mesh`) parameters, optimizer state and batches are
    sharded over it and each host feeds its own rows of every batch.
    """
    if task_vocab(task) > cfg.vocab_size:
        raise ValueError(f"the task's tokenizer has {task_vocab(task)} ids but "
                         f"cfg.vocab_size={cfg.vocab_size}")
    model = build_model(cfg, opts)
    graphdef, params = split_params(model)
    tx = make_optimizer(opts)
    opt_state = tx.init(params)
    start, history = 0, []
    meta = {"config": cfg.to_dict(), "options": dataclasses.asdict(opts),
            "task": describe_task(task)}
    if resume:
        if run_dir is None:
            raise ValueError("resume=True needs run_dir")
        old = checkpoint.load_meta(run_dir)
        for key in ("config", "options", "task"):
            if _resume_view(key, old[key]) != _resume_view(key, meta[key]):
                raise ValueError(f"cannot resume {run_dir}: its {key} {old[key]} differs from "
                                 f"this run's {meta[key]}")
        start, params, opt_state = checkpoint.restore(run_dir, params, opt_state)
        history = old["history"]
    shardings = None
    place: Callable[[np.ndarray], jax.Array]
    place_stacked: Callable[[np.ndarray], jax.Array]
    if mesh is not None:
        from jaxbasics.gpt import sharding

        sharding.check_batch_divides(opts.batch_size, mesh)
        params, opt_state, shardings = sharded_state(params, opt_state, tx, mesh)

        def place(batch: np.ndarray) -> jax.Array:
            return sharding.global_batch(sharding.host_slice(batch), mesh)

        def place_stacked(batches: np.ndarray) -> jax.Array:  # (K, B, T): rows split, not K
            return sharding.global_batch(sharding.host_slice(batches, axis=1), mesh, stacked=True)
    else:
        place = place_stacked = jnp.asarray
    step_fn = make_gpt_train_step(graphdef, tx, shardings=shardings)
    # one call per update's micro-batches too: a Ctrl-C never lands between two of them, where
    # the checkpoint would hold MultiSteps' half-accumulated gradients under the previous step
    loop_fn = make_gpt_train_loop(graphdef, tx, shardings=shardings) \
        if opts.steps_per_call > 1 or opts.accumulate > 1 else None
    schedule = learning_rate_schedule(opts)
    tokens_per_step = opts.batch_size * task_seq_len(task) * opts.accumulate
    end = opts.steps if stop_after is None else min(opts.steps, start + stop_after)
    step = saved = start

    def save() -> None:
        nonlocal saved
        if run_dir is not None and step != saved:
            checkpoint.save(run_dir, step, params, opt_state, {**meta, "history": history})
            saved = step

    def records(first: int, n: int, m: dict[str, jax.Array], t0: float) -> list[dict[str, Any]]:
        """The history records of the n updates after step ``first`` (waits for their losses).
        The update's loss is the mean over its micro-batches; the gradient norm is that of
        its last micro-batch."""
        loss_rows = np.asarray(m["loss"]).reshape(n, opts.accumulate)
        norm_rows = np.asarray(m["grad_norm"]).reshape(n, opts.accumulate)
        tokens_per_s = n * tokens_per_step / (time.perf_counter() - t0)
        return [{"step": first + i + 1, "loss": float(loss_rows[i].mean()),
                 "grad_norm": float(norm_rows[i, -1]), "lr": float(schedule(first + i)),
                 "tokens_per_s": tokens_per_s} for i in range(n)]

    in_flight: tuple[int, int, dict[str, jax.Array], float] | None = None
    try:
        while step < end:
            t0 = time.perf_counter()
            # updates in this call: up to the next multiple of steps_per_call (so a resumed run
            # calls the same programs on the same steps), the next checkpoint, or the end
            n = min(opts.steps_per_call - step % opts.steps_per_call, end - step,
                    opts.save_every - step % opts.save_every)
            micros = range(step * opts.accumulate, (step + n) * opts.accumulate)
            if loop_fn is None:  # one update of one micro-batch
                x, y = task.batch(micros[0], opts.batch_size)
                params, opt_state, m = step_fn(params, opt_state, place(x), place(y),
                                               step_key(opts.seed, micros[0]))
            else:
                xs, ys = (np.stack(a) for a in zip(*(task.batch(i, opts.batch_size)
                                                      for i in micros), strict=True))
                keys = jnp.stack([step_key(opts.seed, i) for i in micros])
                params, opt_state, m = loop_fn(params, opt_state, place_stacked(xs),
                                               place_stacked(ys), keys)
            # params and opt_state now hold these n updates: the step count follows at once,
            # so that a Ctrl-C from here on (waiting for the losses, inside on_step) saves a
            # checkpoint that resumes exactly, with this call's records (below)
            in_flight, step = (step, n, m, t0), step + n
            done = records(*in_flight)
            history.extend(done)
            in_flight = None
            for record in done:
                if on_step is not None:
                    on_step(record["step"], record)
            if step % opts.save_every == 0:
                save()
    except KeyboardInterrupt:
        # interrupted between the call's return and its records joining the history: add them
        # (the wait for its losses is short: it is already running), so that the checkpoint's
        # history has every step it holds
        if in_flight is not None and (history[-1]["step"] if history else 0) < step:
            history.extend(records(*in_flight))
        save()
        raise
    save()
    model = nnx.merge(graphdef, params)
    return TrainResult(model, params, opt_state, step, history)


def _resume_view(key: str, value: dict) -> dict:
    """What must match for a run to resume: everything but how many steps go in one call,
    which does not change the results (:func:`make_gpt_train_loop`)."""
    return {k: v for k, v in value.items() if k != "steps_per_call"} if key == "options" else value


def task_vocab(task: AdditionTask | TextDataset) -> int:
    """Number of token ids the task's tokenizer produces."""
    return task.tokenizer.vocab_size


def task_seq_len(task: AdditionTask | TextDataset) -> int:
    """Tokens per training sequence (T of the (B, T) batches)."""
    return task.seq_len - 1 if isinstance(task, AdditionTask) else task.context_length


def describe_task(task: AdditionTask | TextDataset) -> dict:
    """JSON description of the task, stored with checkpoints and compared on resume."""
    if isinstance(task, AdditionTask):
        return {"kind": "addition", "digits": task.digits, "seed": task.seed}
    return {"kind": "text", "path": str(Path(task.path).absolute()),
            "context_length": task.context_length, "seed": task.seed}
