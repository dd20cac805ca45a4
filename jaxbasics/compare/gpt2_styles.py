"""GPT-2 both ways, on identical weights: the object-oriented PyTorch model
(:class:`~jaxbasics.compare.torch_gpt.TorchGPT`: modules, ``loss.backward()``, ``.grad``,
``optimizer.step()``) against the functional Flax one (:class:`~jaxbasics.gpt.model.GPT`
split once into a pure function of its parameters, ``jax.grad``, Optax).

What :func:`compare_gpt2` measures:

* the logits and the loss of one batch;
* every parameter's gradient, by name (largest absolute difference, and that over the
  tensor's largest gradient: its relative difference), sorted worst first;
* an AdamW run of ``steps`` updates on the same batches (four random batches in turn, which
  the model learns by heart, so that the loss falls), dropout off: both loss curves and the
  largest parameter difference at the end;
* what each style keeps for the backward pass: the tensors PyTorch's autograd saves (counted
  by ``torch.autograd.graph.saved_tensors_hooks`` during one forward pass, unique storage,
  with and without the parameters themselves), and JAX's residuals (the arrays the
  ``jax.vjp`` pullback closes over, parameters excluded) and the compiled step's temporary
  buffers (XLA's memory analysis), for each remat policy;
* the time to the first step (PyTorch: eager, it runs at once; JAX: trace, compile, run)
  and per step after it.

Tolerances (both sides float32 on the CPU, the same weights and batches; the differences
come from the order of floating-point sums, which XLA and ATen choose differently):

* logits: ``LOGIT_ATOL`` = 1e-4 absolute (logits are O(1); float32 rounding of a d-long dot
  product is ~1e-6·sqrt(d) relative, and each layer adds its own);
* gradients: each tensor's max |g_torch − g_jax| ≤ ``GRAD_RTOL`` = 1e-3 × its largest
  |g_torch| (gradients of small entries are sums of many products of both signs: their
  absolute error follows the tensor's scale, not their own);
* AdamW: the largest parameter difference after the run ≤ ``ADAMW_FRACTION`` (0.05) ×
  steps × lr. Adam divides each gradient by the root of its running square, so the update
  of an entry whose gradient is near zero is about ±lr whatever its size: where rounding
  gives such a gradient opposite signs on the two sides, that entry's update differs by up
  to 2·lr on that step. Few entries do, and not on every step: at the default size the
  worst entry ends 1.4·lr apart after 50 steps (bound 2.5·lr) while the mean difference
  stays near 1e-6.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F
from flax import nnx

from jaxbasics import checks
from jaxbasics.compare.torch_gpt import TorchGPT, flax_in_torch_layout, load_from_flax
from jaxbasics.compare.torch_reference import grad_of
from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.model import GPT, parameter_table
from jaxbasics.gpt.train import decay_mask, lm_loss, resolve_remat
from jaxbasics.params import loss_of_params, split_params
from jaxbasics.step import make_step

#: the comparison's default size: runs in about a minute on 2 cores
SMALL = GPTConfig(vocab_size=1024, context_length=128, emb_dim=256, n_heads=4, n_layers=4,
                  drop_rate=0.0)
LOGIT_ATOL = 1e-4
GRAD_RTOL = 1e-3
ADAMW_FRACTION = 0.05  # of steps · lr: the AdamW run's bound on the parameter difference
REMAT_POLICIES = (False, "dots", "full")
MIB = 2.0**20


@dataclass(frozen=True)
class GradRow:
    """One parameter's gradient on both sides (PyTorch's name; ``flax`` the Flax path)."""
    name: str
    flax: str
    shape: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float  # max |diff| over max |g_torch|
    ok: bool


def _batches(cfg: GPTConfig, batch_size: int, n: int, seed: int) -> list[tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(seed)
    out: list[tuple[np.ndarray, ...]] = []
    for _ in range(n):
        ids = rng.integers(0, cfg.vocab_size, (batch_size, cfg.context_length + 1))
        out.append((ids[:, :-1].astype(np.int64), ids[:, 1:].astype(np.int64)))
    return out


def compare_gradients(model: TorchGPT, grads: Any, table: dict) -> list[GradRow]:
    """Every parameter's gradient, PyTorch's ``.grad`` (after ``backward()``) against JAX's
    ``grads`` (the structure of ``split_params(gpt)[1]``), worst relative difference first."""
    torch_params = dict(model.named_parameters())
    rows = []
    for name, flax_name, g_jax in flax_in_torch_layout(grads, table):
        t = grad_of(torch_params[name]).detach().numpy()
        diff = float(np.max(np.abs(t - g_jax)))
        scale = float(np.max(np.abs(t)))
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        rows.append(GradRow(name, flax_name, tuple(t.shape), diff, rel, rel <= GRAD_RTOL))
    return sorted(rows, key=lambda r: -r.max_rel_diff)


def _torch_saved_bytes(model: TorchGPT, x: torch.Tensor, y: torch.Tensor) -> tuple[int, int, int]:
    """``(bytes, bytes without parameters, tensors)`` that autograd saves for the backward
    pass of one forward pass (unique storage, counted once)."""
    param_ptrs = {p.data_ptr() for p in model.parameters()}
    seen: dict[tuple, tuple[int, bool]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = (t.data_ptr(), tuple(t.shape), t.dtype)
        seen.setdefault(key, (t.numel() * t.element_size(), t.data_ptr() in param_ptrs))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    del loss
    total = sum(b for b, _ in seen.values())
    return total, total - sum(b for b, is_param in seen.values() if is_param), len(seen)


def _jax_memory(cfg: GPTConfig, params: Any, x: np.ndarray, y: np.ndarray,
                remat: bool | str) -> dict[str, float | None]:
    """JAX's residuals for one remat policy, in MiB: the arrays the ``jax.vjp`` pullback of
    the loss holds, read from its jaxpr (each once; the parameters, which it passes through
    unchanged, excluded), so nothing runs; and the compiled forward+backward's temporary
    buffers (XLA's memory analysis)."""
    model = nnx.eval_shape(lambda: GPT(cfg, remat=remat, rngs=nnx.Rngs(0)))
    graphdef, _ = nnx.split(model)
    loss = loss_of_params(graphdef, lm_loss)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    closed = jax.make_jaxpr(lambda p: jax.tree.leaves(jax.vjp(lambda q: loss(q, xj, yj, None), p)[1]))(
        params)
    inputs = set(closed.jaxpr.invars)
    kept = {v for v in closed.jaxpr.outvars
            if isinstance(v, jax.extend.core.Var) and v not in inputs}
    avals: list[Any] = [v.aval for v in kept]  # ShapedArrays
    residual = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in avals)
    compiled = jax.jit(jax.value_and_grad(loss)).lower(params, xj, yj, None).compile()
    memory = compiled.memory_analysis()
    temp = getattr(memory, "temp_size_in_bytes", None) if memory is not None else None
    return {"residual_mib": residual / MIB,
            "compiled_temp_mib": None if temp is None else temp / MIB}


def compare_gpt2(cfg: GPTConfig = SMALL, *, batch_size: int = 4, steps: int = 50,
                 lr: float = 1e-3, seed: int = 0, plot: str | Path | None = None,
                 transfer: Any = load_from_flax, memory: bool = True,
                 remat: bool | str = "auto") -> dict[str, Any]:
    """Compare the two styles on ``cfg`` (dropout forced off) with identical weights (the
    Flax model's, copied by ``transfer``) and batches: the module docstring's measurements.

    ``plot``: write both AdamW loss curves there (PNG). ``memory=False`` skips the memory
    measurements (they compile the step once per remat policy). ``remat``: the Flax model's
    setting for the gradient and the AdamW run (``"auto"``, the training default: ``"dots"``
    on CPU; it changes what is stored for the backward pass, not the values).

    Returns a dict (``--json``'s ``gpt2``): ``max_abs_logit_diff``, ``loss`` {torch, jax},
    ``grad`` {torch name: {max_abs_diff, max_rel_diff, flax}}, ``grad_worst`` (the rows,
    worst first), ``adamw_<steps>`` {loss_torch, loss_jax, max_abs_param_diff, tolerance,
    ok}, ``memory`` {torch_saved_mib, torch_saved_mib_without_params, torch_saved_tensors,
    jax_residual_mib, by_remat}, ``time`` {torch_first_step_s, jax_trace_s, jax_compile_s,
    jax_first_step_s, torch_step_ms, jax_step_ms}, and ``ok``: every comparison within its
    tolerance. Raises ``ValueError`` for a bad size."""
    if not isinstance(cfg, GPTConfig):
        raise TypeError(f"cfg must be a GPTConfig, got {type(cfg).__name__}")
    checks.positive_int(batch_size, "batch_size")
    checks.positive_int(steps, "steps")
    checks.uint32(seed, "seed")
    checks.number_in(lr, "lr", 0.0, 1.0)
    cfg = cfg.replace(drop_rate=0.0)
    torch.manual_seed(seed)
    remat = resolve_remat(remat)
    flax_model = GPT(cfg, remat=remat, rngs=nnx.Rngs(seed))
    graphdef, params = split_params(flax_model)
    table = parameter_table(flax_model)
    torch_model = TorchGPT(cfg)
    transfer(torch_model, params, table)
    torch_model.eval()  # dropout off (it is 0 anyway): the OOP switch
    distinct = _batches(cfg, batch_size, min(steps, 4), seed)  # cycled: a loss that falls
    batches = [distinct[i % len(distinct)] for i in range(steps)]
    x, y = batches[0]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    # one batch: logits, loss and every gradient
    torch_model.zero_grad()
    logits_t = torch_model(xt)
    loss_t = F.cross_entropy(logits_t.flatten(0, 1), yt.flatten())
    loss_t.backward()
    loss_fn = loss_of_params(graphdef, lm_loss)
    loss_j, grads = jax.jit(jax.value_and_grad(loss_fn))(params, jnp.asarray(x), jnp.asarray(y),
                                                          None)
    logits_j = np.asarray(jax.jit(lambda q, ids: nnx.merge(graphdef, q)(ids))(params,
                                                                           jnp.asarray(x)))
    logit_diff = float(np.max(np.abs(logits_t.detach().numpy() - logits_j)))
    rows = compare_gradients(torch_model, grads, table)

    # AdamW on the same batches: the OOP loop and the functional step
    opt_t = torch.optim.AdamW(  # decay on matrices only, as decay_mask
        [{"params": [p for p in torch_model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
         {"params": [p for p in torch_model.parameters() if p.dim() < 2], "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95), eps=1e-8)
    tx = optax.adamw(lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, mask=decay_mask(table))
    losses_t, times_t = [], []
    for xb, yb in batches:
        start = time.perf_counter()
        opt_t.zero_grad()
        loss = F.cross_entropy(torch_model(torch.from_numpy(xb)).flatten(0, 1),
                               torch.from_numpy(yb).flatten())
        loss.backward()
        opt_t.step()
        losses_t.append(loss.item())
        times_t.append(time.perf_counter() - start)
    step = make_step(graphdef, lm_loss, tx, donate=False)
    p, s = params, tx.init(params)
    start = time.perf_counter()
    lowered = step.lower(p, s, jnp.asarray(x), jnp.asarray(y), None)
    traced = time.perf_counter()
    compiled = lowered.compile()
    built = time.perf_counter()
    losses_j, times_j = [], []
    for xb, yb in batches:
        t0 = time.perf_counter()
        p, s, loss = compiled(p, s, jnp.asarray(xb), jnp.asarray(yb), None)
        losses_j.append(float(loss))  # waits for the step
        times_j.append(time.perf_counter() - t0)
    param_diff, mean_diff = _param_diffs(torch_model, p, table)
    adamw_tol = ADAMW_FRACTION * steps * lr
    result: dict[str, Any] = {
        "config": cfg.to_dict(), "batch_size": batch_size, "seed": seed, "remat": remat,
        "max_abs_logit_diff": logit_diff, "logit_tolerance": LOGIT_ATOL,
        "loss": {"torch": loss_t.item(), "jax": float(loss_j)},
        "grad_tolerance_rel": GRAD_RTOL,
        "grad": {r.name: {"max_abs_diff": r.max_abs_diff, "max_rel_diff": r.max_rel_diff,
                          "flax": r.flax} for r in rows},
        "grad_worst": [r.__dict__ | {"shape": list(r.shape)} for r in rows],
        f"adamw_{steps}": {"lr": lr, "loss_torch": losses_t, "loss_jax": losses_j,
                           "max_abs_param_diff": param_diff,
                           "mean_abs_param_diff": mean_diff, "tolerance": adamw_tol,
                           "ok": param_diff <= adamw_tol},
        "time": {"torch_first_step_s": times_t[0], "jax_trace_s": traced - start,
                 "jax_compile_s": built - traced,
                 "jax_first_step_s": built - start + times_j[0],
                 "torch_step_ms": 1e3 * float(np.median(times_t[1:] or times_t)),
                 "jax_step_ms": 1e3 * float(np.median(times_j[1:] or times_j))},
    }
    if memory:
        saved, saved_np, n_saved = _torch_saved_bytes(torch_model, xt, yt)
        by_remat = {str(r) if r else "none": _jax_memory(cfg, params, x, y, r)
                    for r in REMAT_POLICIES}
        result["memory"] = {"torch_saved_mib": saved / MIB,
                            "torch_saved_mib_without_params": saved_np / MIB,
                            "torch_saved_tensors": n_saved,
                            "jax_residual_mib": by_remat["none"]["residual_mib"],
                            "by_remat": by_remat}
    if plot is not None:
        result[f"adamw_{steps}"]["png"] = str(_plot_losses(losses_t, losses_j, plot, cfg, lr))
    result["ok"] = (logit_diff <= LOGIT_ATOL and all(r.ok for r in rows)
                    and result[f"adamw_{steps}"]["ok"])
    return result


def _param_diffs(model: TorchGPT, params: Any, table: dict) -> tuple[float, float]:
    """Largest and mean |p_torch − p_jax| over every parameter entry, names matched as for
    the gradients."""
    torch_params = dict(model.named_parameters())
    worst, total, count = 0.0, 0.0, 0
    for name, _, value in flax_in_torch_layout(params, table):
        diff = np.abs(torch_params[name].detach().numpy() - value)
        worst, total, count = max(worst, float(diff.max())), total + float(diff.sum()), \
            count + diff.size
    return worst, total / count


def _plot_losses(losses_t: list[float], losses_j: list[float], path: str | Path,
                 cfg: GPTConfig, lr: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    steps = np.arange(1, len(losses_t) + 1)
    ax.plot(steps, losses_t, label="PyTorch: backward(), optimizer.step()", lw=2.5, alpha=0.6)
    ax.plot(steps, losses_j, "--", label="JAX: jax.grad, optax.adamw", lw=1.2)
    ax.set_xlabel("AdamW step")
    ax.set_ylabel("cross-entropy")
    ax.set_title(f"GPT d={cfg.emb_dim}, {cfg.n_layers} layers, vocab {cfg.vocab_size}: same "
                 f"weights and batches, lr {lr:g}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


_SIZE_KEYS = {"vocab": "vocab_size", "context": "context_length", "emb": "emb_dim",
              "heads": "n_heads", "layers": "n_layers"}


def parse_size(spec: str) -> GPTConfig:
    """The configuration a size names: ``"small"`` (:data:`SMALL`), a GPT-2 preset
    (``"gpt2"``, ``"gpt2-medium"``, ...), or ``"emb=64,layers=2,heads=4,vocab=128,context=16"``
    (the others as :data:`SMALL`). ``ValueError`` names what it cannot read."""
    from jaxbasics.gpt.config import PRESETS

    if spec == "small":
        return SMALL
    if spec in PRESETS:
        return PRESETS[spec].replace(drop_rate=0.0)
    changes: dict[str, int] = {}
    for part in spec.split(","):
        key, _, value = part.partition("=")
        if key.strip() not in _SIZE_KEYS or not value.strip().isdigit():
            raise ValueError(f"size must be 'small', one of {', '.join(PRESETS)}, or "
                             f"key=value pairs with keys {', '.join(_SIZE_KEYS)} and integer "
                             f"values, got {spec!r}")
        changes[_SIZE_KEYS[key.strip()]] = int(value)
    return SMALL.replace(**changes)
