"""The GPT-2 configuration: the chapter's last section (``GPT_CONFIG_124M``) and its larger
siblings, with an exact parameter count and the training FLOPs per token.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from jaxbasics import checks

#: The MLP nonlinearities :class:`GPTConfig` knows (``activation``).
ACTIVATIONS = ("gelu_tanh", "gelu", "relu", "silu")


@dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters of a GPT-2 style decoder.

    Attributes:
      vocab_size: number of token ids (GPT-2's BPE: 50,257 = 50,000 merges + 256 bytes + 1).
      context_length: longest sequence the position embedding covers.
      emb_dim: width d of the residual stream.
      n_heads: attention heads; each has d / n_heads dimensions.
      n_layers: transformer blocks.
      drop_rate: dropout after embeddings, attention weights and each residual branch.
      qkv_bias: bias on the query/key/value projections (the chapter: False; OpenAI's
        released weights: True).
      tie_embeddings: reuse the token embedding as the output head (the chapter's model:
        untied, 163M parameters; OpenAI's GPT-2: tied, 124M).
      ln_eps: the LayerNorms' epsilon (GPT-2: 1e-5; Hugging Face ``layer_norm_epsilon``).
      mlp_dim: the MLP's hidden width; None means 4·emb_dim (Hugging Face ``n_inner``).
      activation: the MLP's nonlinearity, one of :data:`ACTIVATIONS`: ``"gelu_tanh"`` (GPT-2's
        tanh approximation, Hugging Face ``gelu_new``), ``"gelu"`` (exact, erf), ``"relu"``,
        ``"silu"``.
      scale_attn_weights: divide attention scores by sqrt(head_dim) (GPT-2: True).
      scale_attn_by_inverse_layer_idx: also divide block l's scores (l = 0, 1, …) by l + 1
        (Hugging Face's option of the same name; GPT-2: False).
    """

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = False
    tie_embeddings: bool = False
    ln_eps: float = 1e-5
    mlp_dim: int | None = None
    activation: str = "gelu_tanh"
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            checks.positive_int(getattr(self, name), name)
        if self.mlp_dim is not None:
            checks.positive_int(self.mlp_dim, "mlp_dim")
        if not (isinstance(self.ln_eps, (int, float)) and not isinstance(self.ln_eps, bool)
                and 0.0 < self.ln_eps < 1.0):
            raise ValueError(f"ln_eps must be a number in (0, 1), got {self.ln_eps!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.emb_dim % self.n_heads:
            raise ValueError(f"emb_dim must be divisible by n_heads, got emb_dim={self.emb_dim} "
                             f"and n_heads={self.n_heads} (remainder {self.emb_dim % self.n_heads})")
        checks.number_in(self.drop_rate, "drop_rate", 0.0, 1.0, open_hi=True)
        for name in ("qkv_bias", "tie_embeddings", "scale_attn_weights",
                     "scale_attn_by_inverse_layer_idx"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")

    @property
    def head_dim(self) -> int:
        """d / n_heads."""
        return self.emb_dim // self.n_heads

    @property
    def hidden_dim(self) -> int:
        """The MLP's hidden width: ``mlp_dim``, or 4·emb_dim when it is None."""
        return 4 * self.emb_dim if self.mlp_dim is None else self.mlp_dim

    def attention_scale(self, layer: Any = 0) -> Any:
        """What block ``layer``'s attention scores are multiplied by: 1/sqrt(head_dim) if
        ``scale_attn_weights``, times 1/(layer + 1) if ``scale_attn_by_inverse_layer_idx``
        (``layer`` may be a traced integer then)."""
        scale = 1.0 / math.sqrt(self.head_dim) if self.scale_attn_weights else 1.0
        return scale / (layer + 1) if self.scale_attn_by_inverse_layer_idx else scale

    def replace(self, **changes: Any) -> GPTConfig:
        """A copy with some fields changed (validated again)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown GPTConfig field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: Any, source: str = "config") -> GPTConfig:
        """The configuration :meth:`to_dict` wrote; a field it lacks takes its default (dicts
        written before the field existed meant that default). ``ValueError`` names ``source``
        and any field that is unknown or invalid."""
        if not isinstance(fields, dict):
            raise ValueError(f"{source} must be a JSON object of GPTConfig fields, got "
                             f"{type(fields).__name__}")
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{source} has fields GPTConfig does not know: {', '.join(unknown)} "
                             f"(written by another program or version?)")
        try:
            return cls(**fields)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from err


#: The chapter's configuration, exactly.
GPT_CONFIG_124M = GPTConfig()
GPT_CONFIG_355M = GPTConfig(emb_dim=1024, n_heads=16, n_layers=24)
GPT_CONFIG_774M = GPTConfig(emb_dim=1280, n_heads=20, n_layers=36)
GPT_CONFIG_1558M = GPTConfig(emb_dim=1600, n_heads=25, n_layers=48)

PRESETS: dict[str, GPTConfig] = {
    "gpt2": GPT_CONFIG_124M,
    "gpt2-medium": GPT_CONFIG_355M,
    "gpt2-large": GPT_CONFIG_774M,
    "gpt2-xl": GPT_CONFIG_1558M,
}


def parameter_count(cfg: GPTConfig, *, tie_embeddings: bool | None = None,
                    include_position: bool = True) -> int:
    """Exact number of trainable scalars in :class:`jaxbasics.gpt.model.GPT` for ``cfg``.

    With V vocab, C context, d width, L layers::

        embeddings  V·d + C·d
        per block   LayerNorm 2d + QKV 3d² (+3d with qkv_bias) + out-proj d² + d
                    + LayerNorm 2d + MLP (d·m + m) + (m·d + d), m = hidden_dim (4d)
        final       LayerNorm 2d + head V·d (0 when tied)

    ``tie_embeddings`` overrides ``cfg.tie_embeddings``; ``include_position=False`` leaves out
    the C·d position table (:func:`flops_per_token` leaves out the token table too, untied).
    GPT_CONFIG_124M: 163,009,536 untied, 124,412,160 tied.
    """
    if not isinstance(cfg, GPTConfig):
        raise TypeError(f"cfg must be a GPTConfig, got {type(cfg).__name__} {cfg!r}")
    tied = cfg.tie_embeddings if tie_embeddings is None else tie_embeddings
    d, v, m = cfg.emb_dim, cfg.vocab_size, cfg.hidden_dim
    block = (2 * d + 3 * d * d + (3 * d if cfg.qkv_bias else 0) + d * d + d
             + 2 * d + (d * m + m) + (m * d + d))
    total = v * d + cfg.n_layers * block + 2 * d + (0 if tied else v * d)
    if include_position:
        total += cfg.context_length * d
    return total


def flops_per_token(cfg: GPTConfig, seq_len: int | None = None) -> int:
    """Training FLOPs per token (forward + backward) of :class:`jaxbasics.gpt.model.GPT` for
    ``cfg`` at sequence length ``seq_len`` (default ``cfg.context_length``)::

        6·N + 12·L·T·d      N: parameter_count(cfg) less the position table and, untied,
                            the token table (each a lookup, no matmul; tied, the one matrix
                            is the head's and counts once, so tied and untied models count
                            alike), L layers, T sequence length, d width (= heads · head dims)

    6·N is 2 FLOPs per multiply-add of every weight in the forward pass and twice that in the
    backward one (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", section 2.1);
    12·L·T·d is the attention scores Q·Kᵀ and their product with V, 2·T·d each per token and
    layer in the forward pass, times 3 for forward + backward (PaLM, Chowdhery et al. 2022,
    appendix B; nanoGPT's ``estimate_mfu``). The count is of the full T×T score matrix, the
    causal mask not halving it. N keeps the biases and LayerNorm parameters, as nanoGPT's does
    (0.07 % of GPT-2 124M's N, though they multiply nothing); softmax and the optimizer are
    left out, as both references do. The numerator of MFU: tokens/s · flops_per_token / peak FLOP/s.

    Raises:
      TypeError: ``cfg`` is not a :class:`GPTConfig`.
      ValueError: ``seq_len`` is not a positive integer.
    """
    n = parameter_count(cfg, include_position=False)  # refuses anything but a GPTConfig
    if not cfg.tie_embeddings:  # the token table is looked up; the head's matrix multiplies
        n -= cfg.vocab_size * cfg.emb_dim
    if seq_len is not None:
        checks.positive_int(seq_len, "seq_len")
    t = cfg.context_length if seq_len is None else seq_len
    return 6 * n + 12 * cfg.n_layers * t * cfg.emb_dim
