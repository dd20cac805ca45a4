"""Training GPT-2 the functional way (the chapter's model, trained): next-token
cross-entropy, AdamW with weight decay on matrices only, global-norm clipping, linear warmup
then cosine decay, optional bf16 compute, gradient accumulation, orbax checkpoints.

One optimisation step::

    loss(θ) = mean_t CE(GPT_θ(x)_t, y_t)          (positions labelled IGNORE excluded)
    g = clip(∇θ loss, max global norm)

With ``accumulate = K`` the mean runs over the labelled positions of all K micro-batches
together (each token weighs alike, however many a micro-batch labels), one micro-batch in
memory at a time.
    θ ← AdamW(θ, g; lr(step), β1, β2, weight decay on kernels and embeddings only)
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
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
from jaxbasics.gpt import checkpoint, plots
from jaxbasics.gpt.attention import check_implementation, cudnn_model_refusal
from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.data import IGNORE, AdditionTask, PretrainData, TextDataset, step_key
from jaxbasics.gpt.generate import generate
from jaxbasics.gpt.model import GPT, parameter_table, remat_policy
from jaxbasics.losses import cross_entropy
from jaxbasics.params import split_params
from jaxbasics.step import make_step
from jaxbasics.timing import default_device

#: what :func:`train` learns from: each has ``batch(step, batch_size) -> (x, y)``, a pure
#: function of (seed, step), and a ``tokenizer``
Task = AdditionTask | TextDataset | PretrainData


@dataclass(frozen=True)
class TrainOptions:
    """Optimisation settings. Defaults suit the small models of the embedded task; GPT-2's own
    were lr 6e-4, β2 0.95, weight decay 0.1, clip 1.0 (as in nanoGPT)."""

    steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 1e-3  # 2e-3 stalled on a loss plateau for the default seed
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # the decay ends at learning_rate * min_lr_ratio
    schedule: str = "cosine"  # after warmup: "cosine", "linear" decay, or "constant"
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    clip_norm: float = 1.0
    accumulate: int = 1  # micro-batches per optimizer update, every labelled token alike
    bf16: bool = False  # bfloat16 compute, float32 parameters and optimizer state
    # see GPT: False, True/"full", "dots", a checkpoint policy name, or "auto" (resolve_remat)
    remat: bool | str = "auto"
    # see GPT: True (a lax.scan over the layers), False (unrolled) or "auto" (resolve_layers)
    scan_layers: bool | str = "auto"
    # attention kernel, see GPT: "xla", "cudnn" or "auto" (resolve_attention)
    attention: str = "auto"
    seed: int = 0
    save_every: int = 500
    # optimizer updates per compiled call (make_gpt_train_loop): fewer dispatches and, on CPU,
    # one fresh temporary buffer per call instead of per step; the same numbers whatever it is
    # (bit for bit on XLA:CPU as configured by default: tested); "auto": resolve_steps_per_call
    steps_per_call: int | str = "auto"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "accumulate", "save_every"):
            checks.positive_int(getattr(self, name), name)
        if self.steps_per_call != "auto" and (
                isinstance(self.steps_per_call, bool)
                or not isinstance(self.steps_per_call, int | np.integer) or self.steps_per_call <= 0):
            raise ValueError(f"steps_per_call must be a positive integer or 'auto', got "
                             f"{self.steps_per_call!r}")
        if (isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int)
                or self.warmup_steps < 0):
            raise ValueError(f"warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        for name in ("learning_rate", "min_lr_ratio", "weight_decay"):
            checks.number_in(getattr(self, name), name, 0.0, 1.0)
        for name in ("b1", "b2"):  # Adam divides by 1 - β^t: β = 1 is refused
            checks.number_in(getattr(self, name), name, 0.0, 1.0, open_hi=True)
        resolve_remat(self.remat)
        check_scan_layers(self.scan_layers)
        if self.attention != "auto":
            check_implementation(self.attention)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got "
                             f"{self.schedule!r}")
        checks.uint32(self.seed, "seed")
        if self.learning_rate == 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if (isinstance(self.clip_norm, bool) or not isinstance(self.clip_norm, int | float)
                or not self.clip_norm > 0):
            raise ValueError(f"clip_norm must be a number > 0 (inf: no clipping), got "
                             f"{self.clip_norm!r}")


def decay_mask(table: Any) -> Any:
    """True for the parameters weight decay applies to, False for the rest, in the tree of
    ``table`` (:func:`jaxbasics.gpt.model.parameter_table`): matrices and embedding tables
    decay, biases and LayerNorm parameters do not (:attr:`ParamInfo.is_matrix`, from the
    logical axes each parameter declares)."""
    return jax.tree.map(lambda info: info.is_matrix, table)


#: the shapes of the learning rate after warmup (:func:`learning_rate_schedule`)
SCHEDULES = ("cosine", "linear", "constant")


def learning_rate_schedule(opts: TrainOptions) -> optax.Schedule:
    """The learning rate of update ``s`` (0, 1, …), peak ``P = learning_rate``, end
    ``E = P · min_lr_ratio``, warmup ``W = warmup_steps``, ``N = steps``:

    * warmup, ``s < W``: ``P · (s + 1) / (W + 1)`` (nanoGPT's: the first update already
      moves, none runs at 0);
    * then, with ``f = min(1, (s - W) / (N - W))``: ``cosine``: ``E + (P - E) · (1 + cos(π f))
      / 2``; ``linear``: ``P - (P - E) · f``; ``constant``: ``P``.

    Past ``N`` (a run extended with ``--resume --steps``, re-planned to its new length) the
    decay has ended: ``E`` (``P`` for ``constant``)."""
    peak, end, warm, steps = opts.learning_rate, opts.learning_rate * opts.min_lr_ratio, \
        opts.warmup_steps, opts.steps
    span = max(steps - warm, 1)

    def lr(count: Any) -> jax.Array:
        s = jnp.asarray(count, jnp.float32)
        f = jnp.clip((s - warm) / span, 0.0, 1.0)
        after = {"cosine": end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * f)),
                 "linear": peak - (peak - end) * f, "constant": jnp.full_like(f, peak)}
        return jnp.where(s < warm, peak * (s + 1.0) / (warm + 1.0), after[opts.schedule])

    return lr


def make_optimizer(opts: TrainOptions, table: Any) -> optax.GradientTransformation:
    """``clip_by_global_norm → adamw(schedule, mask=decay_mask(table))``: one update per
    call of the step, its schedule counting updates. ``table``: the model's
    :func:`~jaxbasics.gpt.model.parameter_table`. Accumulation over micro-batches is not the
    optimizer's (``optax.MultiSteps`` averages micro-batch means, which weighs a micro-batch
    with few labelled tokens as much as a full one) but the step's
    (:func:`make_gpt_train_step` with ``accumulate=True``)."""
    return optax.chain(
        optax.clip_by_global_norm(opts.clip_norm),
        optax.adamw(learning_rate_schedule(opts), b1=opts.b1, b2=opts.b2,
                    weight_decay=opts.weight_decay, mask=decay_mask(table)))


#: ``scan_layers="auto"`` unrolls the layers on a CPU up to this residual width, context
#: length and depth, the range where it was measured faster (:func:`resolve_layers`)
UNROLL_MAX_WIDTH, UNROLL_MAX_CONTEXT, UNROLL_MAX_LAYERS = 256, 256, 12


def check_scan_layers(scan_layers: Any) -> bool | str:
    """Validate a ``scan_layers`` setting (True, False or ``"auto"``); returns it."""
    if scan_layers != "auto" and not isinstance(scan_layers, bool):
        raise ValueError(f"scan_layers must be True, False or 'auto', got {scan_layers!r}")
    return scan_layers


def resolve_layers(scan_layers: bool | str, cfg: GPTConfig, backend: str | None = None,
                   mesh: Any = None) -> bool:
    """The ``scan_layers`` setting to build the model with (:class:`GPT`): ``"auto"`` is
    ``False`` (layers unrolled, and :func:`resolve_remat`'s ``"auto"`` then saves every
    activation) on a CPU for models of residual width ``cfg.emb_dim`` up to
    :data:`UNROLL_MAX_WIDTH`, context up to :data:`UNROLL_MAX_CONTEXT` and at most
    :data:`UNROLL_MAX_LAYERS` layers, where that measured faster than the scan with ``"dots"``
    (README's shape, d=128, context 128: 1.07-1.14x the update; 12 layers: 1.12x; context
    256: 1.06x; d=256: 1.07x; at d=768 no faster, with half again the memory and a longer
    compile: docs/performance.md). Beyond them the scan: every layer's saved T×T attention
    weights would grow the memory several times over (context 1024: 3-5x the step's
    temporaries) and the compile with the depth. ``True`` elsewhere (``backend``, default:
    :func:`jaxbasics.timing.default_device`'s platform) and on a device ``mesh`` of more
    than one device (measured on one; there XLA's partitioner reshards each unrolled layer's
    slice of the stacked parameters whole). ``True`` or ``False`` is returned as given."""
    if check_scan_layers(scan_layers) == "auto":
        backend = backend or default_device().platform
        narrow = (cfg.emb_dim <= UNROLL_MAX_WIDTH and cfg.context_length <= UNROLL_MAX_CONTEXT
                  and cfg.n_layers <= UNROLL_MAX_LAYERS)
        one_device = mesh is None or getattr(mesh, "size", 1) == 1
        return not (backend == "cpu" and narrow and one_device)
    return bool(scan_layers)


def resolve_remat(remat: bool | str, backend: str | None = None,
                  attention: str = "xla", scan_layers: bool = True) -> bool | str:
    """The ``remat`` setting to build the model with: ``"auto"`` is ``"dots"`` where keeping
    only the matmul outputs and recomputing the elementwise work measured fastest: on a CPU
    with the layers scanned (``scan_layers``), and on a GPU (``backend``, default:
    :func:`jaxbasics.timing.default_device`'s platform) whose attention is XLA's
    (``attention``: at GPT-2 124M's shape on an H200 1.12x the step in fp32 and 1.09x in
    bf16, with a third of the memory; docs/performance.md); ``False`` (every activation
    saved) on a CPU with the layers unrolled (:func:`resolve_layers`), beside cuDNN's
    attention and on a TPU, where it was not measured. Any other value is checked and
    returned."""
    if remat == "auto":
        backend = backend or default_device().platform
        if backend == "cpu":
            return "dots" if scan_layers else False
        return "dots" if backend == "gpu" and attention == "xla" else False
    remat_policy(remat)
    return remat


def _cudnn_refusal(cfg: GPTConfig, bf16: bool, device: Any, mesh: Any) -> str | None:
    """Why cuDNN's flash attention cannot run this model here, or None where it can."""
    cuda = device.platform == "gpu" and "cuda" in str(
        getattr(device.client, "platform_version", "")).lower()
    capability = getattr(device, "compute_capability", None)
    major = int(str(capability).split(".")[0]) if capability else 0
    tensor = dict(getattr(mesh, "shape", {}) or {}).get("tensor", 1)
    if not cuda:
        kind = "" if device.device_kind == device.platform else f" ({device.device_kind})"
        return f"an NVIDIA GPU (cuDNN), but JAX runs on {device.platform}{kind}"
    if major < 8:
        return (f"an NVIDIA GPU of compute capability 8.0 or later, got {capability} "
                f"({device.device_kind})")
    why = cudnn_model_refusal(head_dim=cfg.head_dim,
                              dtype=jnp.bfloat16 if bf16 else jnp.float32,
                              drop_rate=cfg.drop_rate,
                              per_layer_scale=cfg.scale_attn_by_inverse_layer_idx)
    if why is not None:
        return why
    if tensor > 1:
        return f"heads kept whole on each device, got a mesh with tensor={tensor}"
    return None


def resolve_attention(attention: str, cfg: GPTConfig, bf16: bool,
                      device: jax.Device | None = None, mesh: Any = None) -> str:
    """The attention kernel to build the model with (:mod:`jaxbasics.gpt.attention`):
    ``"auto"`` is ``"cudnn"`` (cuDNN's fused flash attention) where it applies and ``"xla"``
    elsewhere. It applies on an NVIDIA GPU of compute capability 8.0 or later (``device``,
    default: :func:`jaxbasics.timing.default_device`) with bfloat16 compute (``bf16``), no
    dropout (``cfg.drop_rate`` 0: the kernel has none), one attention scale for every block
    (not ``scale_attn_by_inverse_layer_idx``), a head size that is a multiple of 8 up to 128,
    and, on a ``mesh``, no ``tensor`` axis splitting the heads. The two compute the same
    function (to rounding); on an H200 at GPT-2 124M's shape cuDNN's step took 0.57 of XLA's
    (docs/performance.md). Any other value is checked and returned; ``"cudnn"`` where it does
    not apply is refused (``ValueError`` saying which condition fails)."""
    check = attention if attention == "auto" else check_implementation(attention)
    if check == "xla":
        return check
    why = _cudnn_refusal(cfg, bf16, device or default_device(), mesh)
    if check == "cudnn" and why is not None:
        raise ValueError(f"attention 'cudnn' needs {why}; use 'xla' or 'auto'")
    return "xla" if why is not None else "cudnn"


_GRAPHDEFS: dict[tuple[Any, ...], nnx.GraphDef] = {}  # _initial_state's, by its static args


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _initial_state(cfg: GPTConfig, dtype: Any, remat: bool | str, scan_layers: bool,
                   attention: str, key: jax.Array) -> nnx.State:
    """GPT's parameters from ``key``, compiled once a model shape; the model's GraphDef is
    kept in :data:`_GRAPHDEFS` when traced (a call that jit serves from its cache has the same
    static arguments, hence an entry)."""
    graphdef, state = nnx.split(GPT(cfg, dtype=dtype, remat=remat, scan_layers=scan_layers,
                                    attention=attention, rngs=nnx.Rngs(key)))
    _GRAPHDEFS[(cfg, dtype, remat, scan_layers, attention)] = graphdef
    return state


def build_model(cfg: GPTConfig, opts: TrainOptions, mesh: Any = None) -> GPT:
    """The GPT for ``cfg`` with the compute dtype, layer loop, remat setting and attention
    kernel of ``opts`` (:func:`resolve_layers`, :func:`resolve_remat`,
    :func:`resolve_attention`, for a run on ``mesh``),
    initialised from ``opts.seed``. The initialisation runs as one compiled program, the seed's
    key its argument: one program a model shape serves every seed (one lowering and one
    compilation-cache lookup a process, where eagerly ~30 operations were lowered and looked
    up one by one); its weights are those of building ``GPT(...)`` eagerly to the last bit
    (:func:`jaxbasics.gpt.model.normal_init`; tested). The program holds the random draws of
    several parameters at once: its peak memory is up to about 2.5 times the weights' (a training
    run holds at least 4 times: weights, gradients, two AdamW moments). Raises what
    :class:`GPT` raises, before anything is compiled."""
    attention = resolve_attention(opts.attention, cfg, opts.bf16, mesh=mesh)
    scan_layers = resolve_layers(opts.scan_layers, cfg, mesh=mesh)
    remat = resolve_remat(opts.remat, attention=attention, scan_layers=scan_layers)
    static = (cfg, jnp.bfloat16 if opts.bf16 else jnp.float32, remat, scan_layers, attention)
    state = _initial_state(*static, jax.random.key(opts.seed))
    return nnx.merge(_GRAPHDEFS[static], state)


def lm_loss(model: GPT, x: jax.Array, y: jax.Array, key: jax.Array | None) -> jax.Array:
    """Mean next-token cross-entropy of ``model(x)`` against ``y`` (B, T); labels equal to
    ``IGNORE`` do not count. Dropout is on when ``key`` is given (one JAX key, checked at
    trace time: a plain int would fail deep inside dropout)."""
    if key is not None:
        checks.random_key(key, "key")
    logits = model(x, deterministic=key is None, rng=key)
    with jax.named_scope("loss"):  # names its ops in profiles (bench.ops)
        return cross_entropy(logits, y, ignore_index=IGNORE)


def lm_loss_sum(model: GPT, x: jax.Array, y: jax.Array, key: jax.Array | None
                ) -> tuple[jax.Array, jax.Array]:
    """``(Σ_t CE(model(x)_t, y_t), number of labelled positions)`` over the positions whose
    label is not ``IGNORE``: the two parts of :func:`lm_loss` that micro-batches of an
    accumulated update add up (:func:`jaxbasics.step.accumulated_value_and_grad`). Dropout as
    in :func:`lm_loss`."""
    if key is not None:
        checks.random_key(key, "key")
    logits = model(x, deterministic=key is None, rng=key)
    with jax.named_scope("loss"):  # names its ops in profiles (bench.ops)
        return (cross_entropy(logits, y, reduction="sum", ignore_index=IGNORE),
                (y != IGNORE).sum())


def _metrics(loss: jax.Array, grads: Any) -> dict[str, jax.Array]:
    return {"loss": loss, "grad_norm": optax.tree.norm(grads)}


def _stack_check(lead: int, names: str) -> Callable[[tuple[Any, ...]], None]:
    """Trace-time check of stacked (x, y, keys): x and y of ``lead`` leading axes before
    (B, T), keys of those leading axes; ``names`` spells them out for the message."""
    def check(stacked: tuple[Any, ...]) -> None:
        xs, ys, keys = stacked
        ok = xs.ndim == lead + 2 and ys.shape == xs.shape and keys.shape == xs.shape[:lead]
        if not ok:
            raise ValueError(f"xs and ys must be ({names}, B, T) and keys ({names}), got xs "
                             f"{xs.shape}, ys {ys.shape}, keys {keys.shape}")
    return check


def staged_batch_checks(model: GPT, x: jax.Array, y: jax.Array, key: jax.Array | None) -> None:
    """Value checks of a (x, y) batch compiled into a checked step (``checked=True``): token
    ids x in [0, vocab_size), labels y in [0, vocab_size) or ``IGNORE``. Outside a checked
    step an id out of range would be clamped by the embedding lookup, silently."""
    top = model.cfg.vocab_size - 1
    checks.staged_in_range(x, "x (token ids)", 0, top)
    checks.staged_in_range(y, "y (labels)", 0, top, also=IGNORE)


def _jit_shardings(shardings: tuple | None, leading: int) -> dict[str, Any]:
    """``in_shardings``/``out_shardings`` of a step whose batches have ``leading`` axes before
    their rows (:func:`jaxbasics.gpt.sharding.batch_sharding`)."""
    if shardings is None:
        return {}
    from jaxbasics.gpt import sharding

    p_sh, o_sh, b_sh, rep = shardings  # keys, whatever their shape, are replicated
    batch = sharding.batch_sharding(b_sh.mesh, leading=leading)
    return {"in_shardings": (p_sh, o_sh, batch, batch, rep), "out_shardings": (p_sh, o_sh, rep)}


def make_gpt_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, *,
                        accumulate: bool = False, donate: bool = True,
                        shardings: tuple | None = None, checked: bool = False
                        ) -> jax.stages.Wrapped:
    """Compiled ``(params, opt_state, x, y, key) -> (params, opt_state, {"loss", "grad_norm"})``
    (:func:`jaxbasics.step.make_step` over :func:`lm_loss`; ``grad_norm`` before clipping).

    ``accumulate=True``: one update from K micro-batches, ``x``, ``y`` of shape (K, B, T) and
    ``key`` (K,) (micro-batch k with ``key[k]``): the loss and gradient are means over the
    labelled tokens of all K together (:func:`lm_loss_sum`), equal to one step over the
    concatenated (K·B, T) batch whatever each micro-batch's mask, holding one micro-batch's
    activations at a time. Other shapes are refused with ``ValueError`` at the first call.

    ``shardings=(params, opt_state, batch, replicated)`` compiles it for a device mesh
    (see :func:`sharded_state`); without it, JAX's default placement. ``checked=True``
    compiles in :func:`staged_batch_checks` and finite loss and gradient checks, raising
    :class:`jaxbasics.step.StepCheckError` (one device; see ``make_step``).
    """
    return make_step(graphdef, lm_loss_sum if accumulate else lm_loss, tx, accumulate=accumulate,
                     donate=donate, metrics=_metrics, checked=checked,
                     check_batch=staged_batch_checks if checked else None,
                     check_stacked=_stack_check(1, "K") if accumulate else None,
                     **_jit_shardings(shardings, 1 if accumulate else 0))


def make_gpt_train_loop(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, *,
                        accumulate: bool = False, donate: bool = True,
                        shardings: tuple | None = None) -> jax.stages.Wrapped:
    """N updates of :func:`make_gpt_train_step` in one compiled call, as one ``jax.lax.scan``:
    ``(params, opt_state, xs, ys, keys) -> (params, opt_state, {"loss": (N,), "grad_norm":
    (N,)})`` with ``xs``, ``ys`` of shape (N, B, T) and ``keys`` (N,) (update i uses ``xs[i]``,
    ``ys[i]``, ``keys[i]``), the same updates as N calls of the step; with ``accumulate``,
    (N, K, B, T) and keys (N, K), each update from K micro-batches as in the step. Other
    shapes are refused with ``ValueError`` at the first call. No Python runs between the
    updates, and XLA plans the step's temporary buffers once per call instead of once per
    step. ``shardings`` as for :func:`make_gpt_train_step`; the leading axes are not split.
    """
    return make_step(graphdef, lm_loss_sum if accumulate else lm_loss, tx, scan=True,
                     accumulate=accumulate, donate=donate, metrics=_metrics,
                     check_stacked=_stack_check(2, "N, K") if accumulate
                     else _stack_check(1, "N"),
                     **_jit_shardings(shardings, 2 if accumulate else 1))


def sharded_state(params: Any, opt_state: Any, tx: optax.GradientTransformation, mesh: Any,
                  table: Any) -> tuple[Any, Any, tuple]:
    """Place ``params`` and ``opt_state`` on ``mesh`` (each parameter by the logical axes of
    ``table``, :func:`~jaxbasics.gpt.model.parameter_table`, through the rules of
    :mod:`jaxbasics.gpt.sharding`; Adam moments follow their parameter) and return them with
    the ``shardings`` tuple for :func:`make_gpt_train_step`."""
    from jax.sharding import NamedSharding, PartitionSpec

    from jaxbasics.gpt import sharding

    rep = NamedSharding(mesh, PartitionSpec())
    p_sh = sharding.param_shardings(table, mesh)
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


def run_meta(cfg: GPTConfig, task: Task, opts: TrainOptions) -> dict:
    """What a run's sidecar records of it (:mod:`.checkpoint`): config, options, task."""
    return {"config": cfg.to_dict(), "options": dataclasses.asdict(opts),
            "task": describe_task(task)}


def check_resumable(run_dir: str | Path, meta: dict, names: dict[str, str] | None = None
                    ) -> dict:
    """The sidecar of ``run_dir`` when this run (``meta``, :func:`run_meta`) may continue it,
    read before any model is built; ``ValueError`` naming the fields that differ (those of
    :data:`RESUME_MAY_DIFFER` may; data is compared by content), each under its name in
    ``names`` (e.g. the command line's ``--lr`` for ``learning_rate``), ``FileNotFoundError``
    when there is no run."""
    old = checkpoint.load_meta(run_dir)
    for key in ("config", "options", "task"):
        ours, theirs = _resume_view(key, meta[key]), _resume_view(key, old[key])
        if ours != theirs:
            fields = sorted(k for k in {*ours, *theirs} if ours.get(k) != theirs.get(k))
            diff = ", ".join(f"{(names or {}).get(k, k)}: {theirs.get(k)!r} there, "
                             f"{ours.get(k)!r} here" for k in fields)
            raise ValueError(f"cannot resume {run_dir}: its {key} "
                             f"{'differ' if key == 'options' else 'differs'} from this run's "
                             f"({diff}); --resume continues a run with what it was started "
                             f"with: to train with other settings, start a new run (another "
                             f"--out, or --overwrite)")
    return old


@dataclass
class _Placement:
    """How a batch reaches the devices: ``place(rows_of, shape, leading)`` for the batch of
    global ``shape`` whose rows (after ``leading`` axes) ``rows_of(range)`` reads;
    ``shardings`` for the step makers (None: one device)."""
    place: Callable[[Callable[[range], np.ndarray], tuple[int, ...], int], jax.Array]
    shardings: tuple | None = None


def _place_on(mesh: Any, params: Any, opt_state: Any, tx: optax.GradientTransformation,
              table: Any, batch_size: int) -> tuple[Any, Any, _Placement]:
    """``params`` and ``opt_state`` sharded over ``mesh`` and the batch placement, each
    process reading only the rows its devices hold
    (:func:`jaxbasics.gpt.sharding.global_batch`); unchanged with a single-device placement
    when ``mesh`` is None."""
    if mesh is None:
        def whole(rows_of, shape, leading):
            return jnp.asarray(rows_of(range(shape[leading])))
        return params, opt_state, _Placement(whole)
    from jaxbasics.gpt import sharding

    sharding.check_batch_divides(batch_size, mesh)
    params, opt_state, shardings = sharded_state(params, opt_state, tx, mesh, table)
    return params, opt_state, _Placement(
        lambda rows_of, shape, leading: sharding.global_batch(rows_of, mesh, leading=leading,
                                                              shape=shape), shardings)


def task_rows(task: Task, step: int, batch_size: int, rows: range
              ) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``rows`` of ``task``'s batch of step ``step``: read alone where the task can
    (:class:`PretrainData`: a memory-mapped corpus), cut from the whole batch otherwise."""
    if isinstance(task, PretrainData):
        return task.batch(step, batch_size, rows=rows)
    x, y = task.batch(step, batch_size)
    return x[rows.start:rows.stop], y[rows.start:rows.stop]


#: steps_per_call="auto": this many updates per call, in runs of at least AUTO_CALL_MIN_STEPS
AUTO_STEPS_PER_CALL = 4
#: fewer steps than this: one update per call (the K-update program's compilation, a few
#: seconds on a CPU, would cost more than its calls save)
AUTO_CALL_MIN_STEPS = 50


def resolve_steps_per_call(opts: TrainOptions) -> int:
    """K, the updates per compiled call of a run with ``opts``: ``opts.steps_per_call``, or
    for ``"auto"`` :data:`AUTO_STEPS_PER_CALL` when ``opts.steps`` >= :data:`AUTO_CALL_MIN_STEPS`,
    else 1. On a CPU, K = 4 takes 10-20 % off each step of the README's run (XLA takes its
    temporaries afresh from the allocator once per call: docs/performance.md)."""
    if opts.steps_per_call != "auto":
        return int(opts.steps_per_call)
    return AUTO_STEPS_PER_CALL if opts.steps >= AUTO_CALL_MIN_STEPS else 1


def call_sizes(start: int, end: int, opts: TrainOptions, eval_every: int = 0) -> list[int]:
    """Updates per compiled call from step ``start`` to ``end``: K
    (:func:`resolve_steps_per_call`) where a whole call fits between multiples of K (so a
    resumed run calls the same programs on the same steps) and before the next checkpoint
    (and evaluation, every ``eval_every`` steps when > 0), else 1. With ``"auto"`` the run's
    first update (step 0) is a call of its own, so that its loss shows after one step, not K
    (steps 1 to K-1 follow one a call too, up to the first multiple of K).
    Only two programs are ever compiled for a run: the K-update loop and the single update."""
    k, sizes, step = resolve_steps_per_call(opts), [], start
    stops = [e for e in (opts.save_every, eval_every) if e > 0]
    first_alone = opts.steps_per_call == "auto"
    while step < end:
        whole = (k > 1 and step % k == 0 and step + k <= end and not (first_alone and step == 0)
                 and all(step // e == (step + k - 1) // e for e in stops))
        sizes.append(k if whole else 1)
        step += sizes[-1]
    return sizes


@dataclass(frozen=True)
class Evaluation:
    """Evaluation while training on a corpus with a validation split (:class:`PretrainData`):
    every ``every`` steps and at the end, the loss over the same ``batches`` batches of fixed
    validation windows (:meth:`~jaxbasics.data.batches.TokenData.eval_batches`), as
    ``val_loss`` (nats per token), ``val_ppl`` (exp of it) and ``val_bpb`` (bits per byte of
    the text scored: total nats / ln 2 / UTF-8 bytes), added to that step's record; with a
    ``sample_prompt``, ``sample``: ``sample_tokens`` tokens continuing it (temperature 0.8,
    top-k 40, a fixed key: one process only)."""

    every: int = 100
    batches: int = 8
    sample_prompt: str | None = None
    sample_tokens: int = 64

    def __post_init__(self) -> None:
        for name in ("every", "batches", "sample_tokens"):
            checks.positive_int(getattr(self, name), name)


def train(cfg: GPTConfig, task: Task, opts: TrainOptions, *,
          run_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
          stop_after: int | None = None, on_step: Callable[[int, dict], None] | None = None,
          mesh: Any = None, evaluation: Evaluation | None = None,
          peak_flops: float | None = None) -> TrainResult:
    """Train a fresh (or, with ``resume``, the checkpointed) model on ``task``.

    Batches and dropout keys are pure functions of ``(seed, step)``, so a resumed run ends
    with the same parameters as an uninterrupted one. ``stop_after`` ends the run after that
    many steps *of this call* (saving a checkpoint); Ctrl-C also saves before stopping.
    ``on_step(step, record)`` is called after each optimizer update with
    ``{"step", "loss", "grad_norm", "lr", "tokens_per_s", "ms_per_step", "tflops"}`` (model
    TFLOP/s: :func:`~jaxbasics.gpt.config.flops_per_token` × tokens/s), ``"mfu"`` (their
    share of ``peak_flops``, FLOP/s: by default the data-sheet dense bf16 peak of a known
    accelerator, none on a CPU) and, at evaluations, the keys of :class:`Evaluation`; the
    records of a call are appended to ``metrics.jsonl`` and TensorBoard as it ends. With a
    ``mesh`` (:func:`jaxbasics.gpt.sharding.make_mesh`) parameters, optimizer state and batches
    are sharded over it and each process reads only
    the rows of every batch that its devices hold. ``evaluation``: validation loss, perplexity
    and bits per byte while training on a :class:`PretrainData` with a validation split.

    With a ``run_dir``, checkpoints, ``run.json``, ``metrics.jsonl`` and TensorBoard events
    (:mod:`jaxbasics.gpt.metrics`) go there, at the end the loss curve ``loss.png``
    (:func:`jaxbasics.gpt.plots.plot_loss`), and a :class:`PretrainData`'s tokenizer is
    copied into ``run_dir/tokenizer``. A ``run_dir`` that already holds a run is continued with
    ``resume`` or replaced with ``overwrite`` (its checkpoints, sidecar, metrics and tokenizer
    are deleted first, nothing else); without either it is refused.

    Raises ``ValueError`` before any model is built for a task whose tokens do not fit
    ``cfg.vocab_size``, a ``run_dir`` holding a run without ``resume`` or ``overwrite``, with
    ``resume`` for a run directory whose sidecar differs (``FileNotFoundError`` where it holds
    no run), for an ``evaluation`` of a task without a validation split, and in a
    multi-process run when the processes disagree on the output directory, configuration,
    options, task, data or mesh (:func:`jaxbasics.gpt.sharding.check_processes_agree`).
    """
    if task_vocab(task) > cfg.vocab_size:
        raise ValueError(f"the task's tokenizer has {task_vocab(task)} ids but "
                         f"cfg.vocab_size={cfg.vocab_size}")
    if evaluation is not None and (not isinstance(task, PretrainData) or task.val is None):
        raise ValueError(f"evaluation needs data with a validation split (a prepared corpus "
                         f"with --val-fraction > 0), got {describe_task(task)['kind']} data "
                         f"without one")
    meta = run_meta(cfg, task, opts)
    meta["evaluation"] = None if evaluation is None else dataclasses.asdict(evaluation)
    if jax.process_count() > 1:  # processes that disagree would wait for each other forever
        from jaxbasics.gpt import sharding

        sharding.check_processes_agree({
            "the output directory": None if run_dir is None else str(Path(run_dir).absolute()),
            "resuming": resume, "the configuration": meta["config"],
            "the options": meta["options"], "the task": meta["task"],
            "the data": data_fingerprint(task), "the mesh": None if mesh is None else
            dict(mesh.shape)})
    old = None
    if resume:
        if run_dir is None:
            raise ValueError("resume=True needs run_dir")
        if overwrite:
            raise ValueError("resume=True continues the run in run_dir, overwrite=True replaces "
                             "it: choose one")
        old = check_resumable(run_dir, meta)
    elif run_dir is not None:
        check_fresh(run_dir, overwrite)
    model = build_model(cfg, opts, mesh)
    graphdef, params = split_params(model)
    table = parameter_table(model)
    tx = make_optimizer(opts, table)
    opt_state = tx.init(params)
    params, opt_state, placed = _place_on(mesh, params, opt_state, tx, table, opts.batch_size)
    start, history = 0, list[dict]()
    if old is not None and run_dir is not None:  # restored straight into the placement above:
        # each process reads its own shards (no array moves between hosts)
        start, params, opt_state = checkpoint.restore(run_dir, params, opt_state)
        from jaxbasics.gpt import metrics

        history = old["history"] if "history" in old else metrics.history_until(run_dir, start)
    elif run_dir is not None and overwrite:
        clear_run(run_dir)
    if run_dir is not None and jax.process_index() == 0 and isinstance(task, PretrainData) \
            and task.tokenizer is not None:
        task.tokenizer.save(Path(run_dir) / checkpoint.TOKENIZER_FOLDER)
    evaluator = None if evaluation is None or not isinstance(task, PretrainData) \
        else _Evaluator(graphdef, task, opts, placed, evaluation)
    loop = _TrainLoop(graphdef, tx, task, opts, placed, meta, run_dir, evaluator)
    from jaxbasics.gpt.config import flops_per_token
    from jaxbasics.timing import table_peak_flops

    loop.flops_per_token = flops_per_token(cfg, task_seq_len(task))
    loop.peak_flops = peak_flops if peak_flops is not None else table_peak_flops(
        jax.devices()[0].device_kind)
    end = opts.steps if stop_after is None else min(opts.steps, start + stop_after)
    try:
        step, params, opt_state = loop.run(start, end, params, opt_state, history, on_step)
    except KeyboardInterrupt:
        if old is None and run_dir is not None and jax.process_count() == 1 \
                and not (Path(run_dir) / "run.json").is_file():
            clear_run(run_dir)  # stopped before a first checkpoint: no half-made run is left
            if Path(run_dir).is_dir() and not any(Path(run_dir).iterdir()):
                Path(run_dir).rmdir()
        raise
    if run_dir is not None and history and jax.process_index() == 0:
        plots.plot_loss(history, Path(run_dir) / plots.LOSS_PNG,
                        title=f"GPT on {task_title(task)}")
    return TrainResult(nnx.merge(graphdef, params), params, opt_state, step, history)


def check_fresh(run_dir: str | Path, overwrite: bool) -> None:
    """Raise ``ValueError`` when ``run_dir`` holds a run (its ``run.json``) and ``overwrite``
    is False, naming the run's step and the two ways on: a finished run is never replaced by
    accident."""
    sidecar = Path(run_dir) / "run.json"
    if sidecar.is_file() and not overwrite:
        try:
            held = f" (step {checkpoint.load_meta(run_dir)['step']})"
        except (ValueError, OSError):
            held = ""
        raise ValueError(f"{run_dir} already holds a run{held}: continue it with --resume "
                         f"(resume=True), replace it with --overwrite (overwrite=True), or "
                         f"choose another --out")


def clear_run(run_dir: str | Path) -> None:
    """Delete what a run wrote in ``run_dir`` (checkpoints, sidecar, metrics, tokenizer, loss
    plot) and nothing else; in a multi-process run process 0 deletes and the others wait."""
    import shutil

    from jaxbasics.gpt import metrics

    run_dir = Path(run_dir)
    if jax.process_index() == 0:
        for name in ("checkpoints", metrics.EVENTS, checkpoint.TOKENIZER_FOLDER):
            shutil.rmtree(run_dir / name, ignore_errors=True)
        for name in ("run.json", "run.json.partial", metrics.JSONL, plots.LOSS_PNG):
            (run_dir / name).unlink(missing_ok=True)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("jaxbasics: old run cleared")


def _rows_of(batch: np.ndarray) -> Callable[[range], np.ndarray]:
    return lambda rows: batch[rows.start:rows.stop]


class _Evaluator:
    """The validation metrics of :class:`Evaluation`: one compiled program summing the labelled
    tokens' loss of a batch (:func:`lm_loss_sum`, placed like the training batches), the bytes
    of text they stand for counted on the host."""

    def __init__(self, graphdef: nnx.GraphDef, task: PretrainData, opts: TrainOptions,
                 placed: _Placement, evaluation: Evaluation):
        self.graphdef, self.task, self.opts, self.placed = graphdef, task, opts, placed
        self.every, self.evaluation = evaluation.every, evaluation
        kwargs: dict[str, Any] = {}
        if placed.shardings is not None:
            p_sh, _, b_sh, rep = placed.shardings
            kwargs = {"in_shardings": (p_sh, b_sh, b_sh), "out_shardings": (rep, rep)}
        self.total = jax.jit(lambda params, x, y: lm_loss_sum(nnx.merge(graphdef, params), x, y,
                                                              None), **kwargs)
        self.batches = list(task.val.eval_batches(evaluation.batches, opts.batch_size,
                                                  task.context_length))
        self.tokenizer = tok = task.tokenizer
        self.bytes = (sum(int(task.val.target_bytes(y).sum()) for _, y in self.batches)
                      if tok is not None else None)
        self.prompt = None
        if evaluation.sample_prompt is not None and tok is not None and jax.process_count() == 1:
            from jaxbasics.gpt.generate import encode_prompt

            self.prompt = encode_prompt(tok, evaluation.sample_prompt, task.train.vocab_size,
                                        name=f"the tokenizer of {task.path}")

    def __call__(self, params: Any) -> dict[str, Any]:
        """``{"val_loss", "val_ppl", "val_bpb", "sample"}`` of ``params`` (``val_bpb`` and
        ``sample`` None where unknown or not asked for)."""
        from jaxbasics.gpt.evaluate import summarize

        nll, count = 0.0, 0
        for x, y in self.batches:
            t, c = self.total(params, *(self.placed.place(_rows_of(a), a.shape, 0) for a in (x, y)))
            nll, count = nll + float(t), count + int(c)
        r = summarize(nll, count, self.bytes, windows=sum(len(x) for x, _ in self.batches),
                      context=self.task.context_length, stride=None)
        out: dict[str, Any] = {"val_loss": r.loss, "val_ppl": r.perplexity,
                               "val_bpb": r.bits_per_byte, "sample": None}
        if self.prompt is not None and self.tokenizer is not None:
            model = nnx.merge(self.graphdef, params)
            room = model.cfg.context_length - self.prompt.shape[1]
            new = min(self.evaluation.sample_tokens, room)
            if new > 0:
                ids = generate(model, self.prompt, new, temperature=0.8, top_k=40,
                               rng=jax.random.key(self.opts.seed))
                out["sample"] = self.tokenizer.decode(
                    [int(i) for i in np.asarray(ids[0])[self.prompt.shape[1]:]])
        return out


def release_free_memory() -> bool:
    """Hand the heap memory this process has freed back to the operating system (glibc's
    ``malloc_trim(0)``). Compiling a training step, XLA's compiler allocates and frees a few
    hundred MiB that glibc would otherwise keep for the process, and the step's own buffers
    then come on top of them: :func:`train` calls this between compiling its programs and
    running them, so a run's peak resident memory is the step's, not the compiler's plus the
    step's. Returns False where the C library has no ``malloc_trim`` (not glibc)."""
    try:
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):  # Windows: no C library by that name
        return False
    if trim is None:
        return False
    trim(0)
    return True


class _TrainLoop:
    """The update calls of :func:`train`, their history records and checkpoints."""

    def __init__(self, graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                 task: Task, opts: TrainOptions, placed: _Placement,
                 meta: dict, run_dir: str | Path | None, evaluator: _Evaluator | None = None):
        self.task, self.opts, self.placed, self.meta, self.run_dir = task, opts, placed, meta, run_dir
        self.evaluator = evaluator
        # one call per update (the step) or per n updates (the loop), each update's
        # micro-batches inside the call; jax compiles each once per number of updates, and
        # call_sizes keeps that to two programs
        acc = opts.accumulate > 1
        self.one_update = make_gpt_train_step(graphdef, tx, accumulate=acc,
                                              shardings=placed.shardings)
        self.loop = make_gpt_train_loop(graphdef, tx, accumulate=acc, shardings=placed.shardings)
        self.programs: dict[int, Any] = {}  # updates per call -> its compiled program
        self.schedule = learning_rate_schedule(opts)
        self.tokens_per_step = opts.batch_size * task_seq_len(task) * opts.accumulate
        self.flops_per_token = 0.0  # set by train: model FLOPs, and the peak MFU is against
        self.peak_flops: float | None = None

    def call(self, step: int, n: int, params: Any, opt_state: Any) -> tuple[Any, Any, dict]:
        """The ``n`` updates after ``step`` in one compiled call: update i from the
        ``accumulate`` micro-batches ``(step + i) · accumulate + k``, each a pure function of
        (seed, micro-batch index), as are their dropout keys."""
        opts, place = self.opts, self.placed.place
        k = opts.accumulate
        micros = np.arange(step * k, (step + n) * k).reshape(n, k)
        # leading axes before (B, T): (N, K), (N,) or (K,) where more than one, else none
        lead = tuple(size for size in (n, k) if size > 1)
        shape = (*lead, opts.batch_size, task_seq_len(self.task))
        read: dict[range, tuple[np.ndarray, np.ndarray]] = {}

        def rows_of(rows: range) -> tuple[np.ndarray, np.ndarray]:  # x and y read together
            if rows not in read:
                parts = [task_rows(self.task, int(i), opts.batch_size, rows) for i in micros.ravel()]
                read[rows] = tuple(np.stack(a).reshape(*lead, len(rows), -1)
                                   for a in zip(*parts, strict=True))  # type: ignore[assignment]
            return read[rows]

        keys = jnp.stack([step_key(opts.seed, int(i)) for i in micros.ravel()]).reshape(lead)
        args = (params, opt_state, place(lambda r: rows_of(r)[0], shape, len(lead)),
                place(lambda r: rows_of(r)[1], shape, len(lead)), keys)
        if n not in self.programs:  # compiled (or loaded from the cache) at its first call,
            # (plain jitted steps: a checked step's compiled program would return its error,
            # not raise it)
            run = self.loop if n > 1 else self.one_update  # n == 1: no updates axis
            self.programs[n] = run.lower(*args).compile()
            release_free_memory()  # then the compiler's freed memory goes back to the OS
        return self.programs[n](*args)

    def records(self, first: int, n: int, m: dict[str, jax.Array], t0: float) -> list[dict]:
        """The history records of the n updates after step ``first`` (waits for their losses):
        each update's loss (over all its micro-batches' labelled tokens) and gradient norm
        (before clipping)."""
        losses = np.asarray(m["loss"]).reshape(n)
        norms = np.asarray(m["grad_norm"]).reshape(n)
        seconds = time.perf_counter() - t0
        tokens_per_s = n * self.tokens_per_step / seconds
        speed = {"tokens_per_s": tokens_per_s, "ms_per_step": 1000 * seconds / n,
                 "tflops": tokens_per_s * self.flops_per_token / 1e12}
        if self.peak_flops:
            speed["mfu"] = tokens_per_s * self.flops_per_token / self.peak_flops
        return [{"step": first + i + 1, "loss": float(losses[i]), "grad_norm": float(norms[i]),
                 "lr": float(self.schedule(first + i)), **speed} for i in range(n)]

    def run(self, start: int, end: int, params: Any, opt_state: Any, history: list[dict],
            on_step: Callable[[int, dict], None] | None) -> tuple[int, Any, Any]:
        """Updates from ``start`` to ``end``, records appended to ``history``, a checkpoint
        every ``save_every`` steps, at the end and on Ctrl-C (re-raised after saving); a
        non-finite loss or gradient norm raises :class:`NonFiniteError` and saves nothing."""
        step = saved = start
        log = None
        if self.run_dir is not None and jax.process_index() == 0:
            from jaxbasics.gpt.metrics import MetricsLog

            log = MetricsLog(self.run_dir, history)
        every = 0 if self.evaluator is None else self.evaluator.every

        def save() -> None:
            nonlocal saved
            if self.run_dir is not None and step != saved:
                with checkpoint.interrupts_deferred():  # a Ctrl-C comes once this step is saved
                    checkpoint.save(self.run_dir, step, params, opt_state, self.meta)
                    saved = step

        def logged(records: list[dict]) -> None:  # as they happen: metrics are live
            history.extend(records)
            if log is not None:
                with checkpoint.interrupts_deferred():
                    log.write(records)

        in_flight: tuple[int, int, dict[str, jax.Array], float] | None = None
        try:
            for n in call_sizes(start, end, self.opts, every):
                t0 = time.perf_counter()
                params, opt_state, m = self.call(step, n, params, opt_state)
                # params and opt_state now hold these n updates: the step count follows at
                # once, so that a Ctrl-C from here on (waiting for the losses, inside on_step)
                # saves a checkpoint that resumes exactly, with this call's records (below)
                in_flight, step = (step, n, m, t0), step + n
                done = self.records(*in_flight)
                if (bad := _first_non_finite(done)) is not None:  # nothing of it is saved
                    raise NonFiniteError(bad[0], bad[1], bad[2], saved if saved else None,
                                         self.run_dir)
                if self.evaluator is not None and (step % every == 0 or step == self.opts.steps):
                    done[-1].update(self.evaluator(params))
                logged(done)
                in_flight = None
                for record in done:
                    if on_step is not None:
                        on_step(record["step"], record)
                if step % self.opts.save_every == 0:
                    save()
            save()
        except KeyboardInterrupt:
            # interrupted between the call's return and its records joining the history: add
            # them (the wait for its losses is short: it is already running), so that the
            # checkpoint's history has every step it holds
            if in_flight is not None and (history[-1]["step"] if history else 0) < step:
                late = self.records(*in_flight)
                if _first_non_finite(late) is not None:
                    raise  # the parameters are no longer finite: keep the last checkpoint
                if self.evaluator is not None and (step % every == 0 or step == self.opts.steps):
                    with checkpoint.interrupts_deferred():  # the step's evaluation, finished:
                        late[-1].update(self.evaluator(params))  # a resume never redoes it
                logged(late)
            save()
            raise
        finally:
            if log is not None:
                log.close()
        return step, params, opt_state


class NonFiniteError(FloatingPointError):
    """Training stopped at the first update whose loss or gradient norm is not finite (NaN or
    ±inf: in the data, a learning rate too high, ...). The parameters from then on are not
    saved; ``checkpoint`` is the last good one's step (None: none saved)."""

    def __init__(self, step: int, what: str, value: float, checkpoint: int | None,
                 run_dir: str | Path | None):
        self.step, self.what, self.value, self.checkpoint = step, what, value, checkpoint
        kept = (f"the last good checkpoint, step {checkpoint}, is kept in {run_dir}"
                if checkpoint is not None and run_dir is not None else "no checkpoint was saved")
        super().__init__(f"training stopped at step {step}: its {what} is {value} (not finite); "
                         f"{kept}, nothing after it was saved")


def _first_non_finite(records: list[dict]) -> tuple[int, str, float] | None:
    """``(step, "loss" or "gradient norm", value)`` of the first record with a value that is
    not finite, or None."""
    for r in records:
        for key, what in (("loss", "loss"), ("grad_norm", "gradient norm")):
            if not np.isfinite(r[key]):
                return r["step"], what, r[key]
    return None


#: options that may differ when a run is resumed: they change no parameter (how many steps
#: go in one call, how often a checkpoint is written, which kernel computes attention: the
#: same function to rounding) or extend it (``steps``: the schedule is
#: re-planned to the new length, :func:`learning_rate_schedule`)
RESUME_MAY_DIFFER = ("steps", "steps_per_call", "save_every", "attention", "scan_layers")


def _resume_view(key: str, value: dict) -> dict:
    """What must match for a run to resume: the configuration (a field that an older sidecar
    lacks has its default value), the options but :data:`RESUME_MAY_DIFFER`, and the task
    with its data known by content (``data``: a digest), not by where it lies (``path``)."""
    if key == "config":
        return {**GPTConfig().to_dict(), **value}
    if key == "options":
        return {"schedule": "cosine", **{k: v for k, v in value.items()
                                         if k not in RESUME_MAY_DIFFER}}
    return {k: v for k, v in value.items() if k != "path" or "data" not in value}


def data_fingerprint(task: Task) -> str:
    """A digest of the training data: of the text file's bytes, a corpus's
    (:meth:`PretrainData.fingerprint`), or of the addition task's settings (its examples are a
    function of them)."""
    import hashlib
    import json

    if isinstance(task, PretrainData):
        return task.fingerprint()
    if isinstance(task, TextDataset):
        return hashlib.sha256(task.train.tobytes() + task.val.tobytes()).hexdigest()
    return hashlib.sha256(json.dumps(describe_task(task), sort_keys=True).encode()).hexdigest()


def task_vocab(task: Task) -> int:
    """Number of token ids the task holds (its tokenizer's, or a corpus's vocabulary)."""
    if isinstance(task, PretrainData):
        return task.train.vocab_size
    return task.tokenizer.vocab_size


def task_seq_len(task: Task) -> int:
    """Tokens per training sequence (T of the (B, T) batches)."""
    return task.seq_len - 1 if isinstance(task, AdditionTask) else task.context_length


def task_title(task: Task) -> str:
    """What a run trains on, in words (the title of its ``loss.png``)."""
    if isinstance(task, AdditionTask):
        return f"{task.digits}-digit addition"
    if isinstance(task, PretrainData):
        return (f"{task.path} ({task.train.n:,} training tokens, vocabulary "
                f"{task.vocab_size:,})")
    return f"text file {task.path}"


def describe_task(task: Task) -> dict:
    """JSON description of the task, stored with checkpoints and compared on resume."""
    if isinstance(task, AdditionTask):
        return {"kind": "addition", "digits": task.digits, "seed": task.seed}
    if isinstance(task, PretrainData):
        return task.describe()
    return {"kind": "text", "path": str(Path(task.path).absolute()),
            "context_length": task.context_length, "seed": task.seed,
            "data": data_fingerprint(task)}
