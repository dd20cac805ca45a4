"""The chapter's GPT-2 the object-oriented way, in PyTorch: the structure of the book's
``GPTModel`` (token and position embeddings, a stack of pre-LayerNorm transformer blocks, a
final LayerNorm and an output head), each ``nn.Module`` holding its parameters, dropout
switched by ``train()``/``eval()`` (``nn.Dropout`` after the embeddings, on the attention
weights and on each residual branch), ``loss.backward()`` filling every ``.grad`` and
``optimizer.step()`` updating in place. One difference of layout: the query, key and value
projections are one fused ``qkv`` linear layer, as in GPT-2's checkpoints and the Flax model.

Architecture, init and optimizer groups match :mod:`jaxbasics.gpt.model` and
:mod:`jaxbasics.gpt.train`, modules carry the Flax model's attribute names, and
:func:`load_from_flax` copies weights across, so that the two styles can be compared number
for number (:mod:`jaxbasics.compare.gpt2_styles`) and timed (:mod:`jaxbasics.bench.gpt2`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jaxbasics.gpt.config import GPTConfig


class _Attention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.n_heads, self.p = cfg.n_heads, cfg.drop_rate  # attention-weight dropout in train()
        self.scale = cfg.attention_scale(layer)
        self.qkv = nn.Linear(cfg.emb_dim, 3 * cfg.emb_dim, bias=cfg.qkv_bias)
        self.proj = nn.Linear(cfg.emb_dim, cfg.emb_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).unbind(2)
        att = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), is_causal=True, scale=self.scale,
                                             dropout_p=self.p if self.training else 0.0)
        return self.proj(att.transpose(1, 2).reshape(b, t, d))


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu_tanh": partial(F.gelu, approximate="tanh"), "gelu": F.gelu, "relu": F.relu,
    "silu": F.silu}


class _MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.emb_dim, cfg.hidden_dim)
        self.proj = nn.Linear(cfg.hidden_dim, cfg.emb_dim)
        self.act = _ACTIVATIONS[cfg.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


class _Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.emb_dim, eps=cfg.ln_eps)
        self.ln2 = nn.LayerNorm(cfg.emb_dim, eps=cfg.ln_eps)
        self.attn, self.mlp = _Attention(cfg, layer), _MLP(cfg)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_shortcut(self.attn(self.ln1(x)))
        return x + self.drop_shortcut(self.mlp(self.ln2(x)))


class TorchGPT(nn.Module):
    """GPT-2 for a :class:`GPTConfig`: embeddings, pre-LN blocks, final LN, head (tied or not)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.blocks = nn.ModuleList(_Block(cfg, i) for i in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.emb_dim, eps=cfg.ln_eps)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.emb_dim, cfg.vocab_size,
                                                              bias=False)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * cfg.n_layers) if name.endswith(("proj.weight",)) \
                    else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1], device=idx.device))
        x = self.drop_emb(x)
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        return x @ self.tok_emb.weight.T if self.head is None else self.head(x)


def adamw(model: TorchGPT, lr: float = 6e-4, weight_decay: float = 0.1, fused: bool = False
          ) -> torch.optim.AdamW:
    """AdamW with decay on matrices and embeddings only, as :func:`jaxbasics.gpt.train.decay_mask`
    (``fused``: one kernel per step for all parameters; on CPU and CUDA)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95),
                             fused=fused or None)


def torch_name(path: tuple[str, ...], layer: int | None = None) -> str:
    """The :class:`TorchGPT` parameter name of the Flax parameter at ``path`` (as in
    ``split_params(gpt)[1]``; ``layer`` the block index of a stacked block parameter): the
    modules have the Flax model's attribute names, and PyTorch calls a kernel, a LayerNorm scale
    and an embedding table each ``weight``."""
    leaf = "weight" if path[-1] in ("kernel", "scale", "embedding") else path[-1]
    head = (path[0], str(layer), *path[1:-1]) if layer is not None else path[:-1]
    return ".".join((*head, leaf))


def flax_in_torch_layout(tree: Any, table: dict) -> Iterator[tuple[str, str, np.ndarray]]:
    """``(PyTorch name, Flax name, array)`` for each parameter of a tree shaped like the Flax
    GPT's parameters (the parameters, or their gradients), in PyTorch's layout: kernels
    transposed (``nn.Linear.weight`` is (out, in)) and stacked block parameters one layer at
    a time (Flax name ``blocks.mlp.fc.kernel[1]``). ``table``: the Flax model's
    :func:`~jaxbasics.gpt.model.parameter_table`, whose order it follows."""
    import jax  # here, not at the top: a PyTorch-only process (bench --suite pretrain) needs
    # no JAX

    flat = dict(jax.tree_util.tree_flatten_with_path(tree)[0])
    for key_path, info in jax.tree_util.tree_flatten_with_path(table)[0]:
        path = tuple(str(k.key) for k in key_path)
        value = np.asarray(flat[key_path])
        transpose = path[-1] == "kernel"
        flax_name = ".".join(path)
        for i in range(info.shape[0]) if info.per_layer else [None]:
            layer = value if i is None else value[i]
            yield (torch_name(path, i), flax_name if i is None else f"{flax_name}[{i}]",
                   layer.T if transpose else layer)


def load_from_flax(model: TorchGPT, params: dict, table: dict) -> None:
    """Copy a Flax GPT's parameters (``split_params(gpt)[1]``) into ``model`` in place, each
    to its PyTorch name in PyTorch's layout (:func:`flax_in_torch_layout`). ``table``: the
    Flax model's :func:`~jaxbasics.gpt.model.parameter_table`. Raises ``ValueError`` naming a
    parameter whose shapes differ, and any PyTorch parameter left without a value."""
    targets = dict(model.named_parameters())
    filled: set[str] = set()
    with torch.no_grad():
        for name, _, arr in flax_in_torch_layout(params, table):
            if name not in targets or tuple(targets[name].shape) != arr.shape:
                got = tuple(targets[name].shape) if name in targets else "no such parameter"
                raise ValueError(f"{name}: torch {got} vs flax {arr.shape}")
            targets[name].copy_(torch.from_numpy(np.array(arr)))  # a writable, contiguous copy
            filled.add(name)
    left = sorted(set(targets) - filled)
    if left:
        raise ValueError(f"torch parameters without a Flax value: {', '.join(left)}")
