"""Loss, perplexity and bits per byte of a GPT on token windows: a whole split with a sliding
window (``jaxbasics eval``), or a fixed set of validation batches (evaluation during training).

For scored labels ``y_j`` (each next token, predicted from the tokens before it in its window)::

    loss  = Σ_j -log p(y_j | history) / N          nats per token (N scored tokens)
    perplexity = exp(loss)
    bits per byte = Σ_j -log p(y_j | history) / ln 2 / B    (B: UTF-8 bytes of the scored text)

Bits per byte divides by the text, not the tokens, so it compares models with different
tokenizers (a byte model and a BPE model on the same corpus). The end-of-text separators count 0
bytes (:meth:`jaxbasics.data.vocab.HFTokenizer.token_bytes`) though their loss counts.

The windows of a whole split are :func:`jaxbasics.data.batches.stride_windows`: with a
``stride`` below the context, windows overlap and each token is scored once, with at least
``context - stride`` tokens of history before it (transformers' guide "Perplexity of
fixed-length models" does the same).

One compiled program per (batch size, context): the last batch is padded with a window whose
positions are all masked out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxbasics import checks
from jaxbasics.data.batches import TokenData, stride_windows
from jaxbasics.gpt.model import GPT


@dataclass(frozen=True)
class EvalResult:
    """What :func:`evaluate` and :func:`score` measured.

    ``loss`` (nats per scored token), ``perplexity``, ``bits_per_byte`` (None when the bytes
    of the text are unknown: no tokenizer), ``tokens`` scored, ``bytes`` of text they stand
    for, ``nll`` (their summed negative log-likelihood, nats), ``windows`` read, ``context`` and
    ``stride`` (None for fixed batches)."""

    loss: float
    perplexity: float
    bits_per_byte: float | None
    tokens: int
    bytes: int | None
    nll: float
    windows: int
    context: int
    stride: int | None

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


@partial(jax.jit, static_argnums=0)
def _row_nll(graphdef: nnx.GraphDef, state: Any, x: jax.Array, y: jax.Array, mask: jax.Array
             ) -> jax.Array:
    """(B,) float32: each row's summed -log p(y | x) over the positions where ``mask``."""
    model = nnx.merge(graphdef, state)
    logits = model(x).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, y[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(mask, nll, 0.0), axis=-1)


def score(model: GPT, batches: Iterable[tuple[np.ndarray, ...]], *,
          token_bytes: np.ndarray | None = None, stride: int | None = None) -> EvalResult:
    """Score ``batches`` of ``(x, y)`` or ``(x, y, mask)`` (int (B, T) inputs and labels; a
    bool (B, T) mask of the labels that count, all by default) with ``model``: the summed
    negative log-likelihood of the counted labels, as an :class:`EvalResult`.

    ``token_bytes`` ((V,) bytes of text per id, e.g. ``TokenData.token_bytes``) gives bits per
    byte. Every batch must have the same shape (one compiled program); the model runs in
    inference mode (no dropout). For evaluation during training, ``batches`` is
    ``data.eval_batches(n, B, C)``: the same windows each time.

    Raises ``ValueError`` for labels outside the model's vocabulary, inputs longer than its
    context, or no batch."""
    graphdef, state = nnx.split(model)
    vocab, context = model.cfg.vocab_size, model.cfg.context_length
    total, count, nbytes, windows, width = 0.0, 0, 0, 0, 0
    pending = []
    for batch in batches:
        x, y = np.asarray(batch[0]), np.asarray(batch[1])
        mask = np.ones(y.shape, bool) if len(batch) < 3 else np.asarray(batch[2], bool)
        if x.ndim != 2 or x.shape != y.shape or mask.shape != y.shape:
            raise ValueError(f"x, y (and mask) must be (B, T) arrays of one shape, got "
                             f"{x.shape}, {y.shape}, {mask.shape}")
        if x.shape[1] > context:
            raise ValueError(f"windows of {x.shape[1]} tokens exceed the model's context "
                             f"{context}")
        if max(int(x.max()), int(y.max())) >= vocab or min(int(x.min()), int(y.min())) < 0:
            raise ValueError(f"token ids must lie in the model's vocabulary [0, {vocab}), got "
                             f"{min(int(x.min()), int(y.min()))} to "
                             f"{max(int(x.max()), int(y.max()))}")
        width = x.shape[1]
        pending.append(_row_nll(graphdef, state, jnp.asarray(x, jnp.int32),
                                jnp.asarray(y, jnp.int32), jnp.asarray(mask)))
        count += int(mask.sum())
        windows += int(mask.any(axis=1).sum())
        if token_bytes is not None:
            nbytes += int(np.where(mask, token_bytes[y], 0).sum())
        if len(pending) > 4:  # keep a few batches in flight, not the whole split's results
            total += float(np.asarray(pending.pop(0), np.float64).sum())
    if width == 0:
        raise ValueError("no batch to score")
    total += sum(float(np.asarray(p, np.float64).sum()) for p in pending)
    return summarize(total, count, nbytes if token_bytes is not None else None,
                     windows=windows, context=width, stride=stride)


def summarize(nll: float, tokens: int, nbytes: int | None, *, windows: int, context: int,
              stride: int | None) -> EvalResult:
    """The :class:`EvalResult` of ``nll`` nats summed over ``tokens`` scored labels that stand
    for ``nbytes`` bytes of text (None: unknown): loss = nll / tokens, perplexity = exp(loss),
    bits per byte = nll / ln 2 / nbytes (NaN loss and perplexity when nothing was scored;
    perplexity inf where exp overflows)."""
    loss = nll / tokens if tokens else float("nan")
    # exp overflows a float past 709.78 (a diverged model): its perplexity is inf
    perplexity = float("nan") if not tokens else math.inf if loss > 709 else math.exp(loss)
    return EvalResult(loss=loss, perplexity=perplexity,
                      bits_per_byte=nll / math.log(2) / nbytes if nbytes else None,
                      tokens=tokens, bytes=nbytes, nll=nll, windows=windows, context=context,
                      stride=stride)


def split_batches(data: TokenData, context: int, stride: int, batch_size: int
                  ) -> Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(x, y, mask)`` batches of :func:`~jaxbasics.data.batches.stride_windows` over all of
    ``data``, read one batch at a time; the last batch is filled up with a copy of the last
    window, fully masked."""
    starts, first = stride_windows(data.n, context, stride)
    positions = np.arange(context)[None, :]
    for at in range(0, len(starts), batch_size):
        s, f = starts[at: at + batch_size], first[at: at + batch_size]
        pad = batch_size - len(s)
        mask = positions >= f[:, None]
        if pad:
            s = np.concatenate([s, np.repeat(s[-1:], pad)])
            mask = np.concatenate([mask, np.zeros((pad, context), bool)])
        x, y = data.windows(s, context)
        yield x, y, mask


def evaluate(model: GPT, data: TokenData, *, context: int | None = None,
             stride: int | None = None, batch_size: int = 8) -> EvalResult:
    """Loss, perplexity and bits per byte of ``model`` over every token of ``data`` (module
    docstring), in windows of ``context`` tokens (default: the model's) moved by ``stride``
    (default: ``context``, no overlap), ``batch_size`` windows per compiled call.

    Bits per byte needs ``data.tokenizer`` (None otherwise). Raises ``ValueError``, before
    anything is compiled, when the data's vocabulary is larger than the model's, ``context``
    exceeds the model's, ``stride`` is not in ``[1, context]``, or the split is shorter than one
    window."""
    cfg = model.cfg
    context = cfg.context_length if context is None else context
    checks.positive_int(context, "context")
    checks.positive_int(batch_size, "batch_size")
    if context > cfg.context_length:
        raise ValueError(f"context {context} exceeds the model's context_length "
                         f"{cfg.context_length}")
    if data.vocab_size > cfg.vocab_size:
        raise ValueError(f"{data.source} has a vocabulary of {data.vocab_size} ids, the model "
                         f"only {cfg.vocab_size}: they were not made for each other")
    stride = context if stride is None else stride
    stride_windows(data.n, context, stride)  # its errors, before anything is compiled
    token_bytes = data.token_bytes if data.tokenizer is not None else None
    return score(model, split_batches(data, context, stride, batch_size),
                 token_bytes=token_bytes, stride=stride)
