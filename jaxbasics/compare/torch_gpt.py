"""The same GPT-2 in PyTorch, for timing against the Flax model in the same process (the
chapter's GPT, object-oriented). Architecture, init and optimizer groups match
:mod:`jaxbasics.gpt.model` and :mod:`jaxbasics.gpt.train`; :func:`load_from_flax` copies weights
across so the two can also be checked for equal logits.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jaxbasics.gpt.config import GPTConfig


class _Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        d = cfg.emb_dim
        self.n_heads, self.p = cfg.n_heads, cfg.drop_rate
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=1e-5), nn.LayerNorm(d, eps=1e-5)
        self.qkv = nn.Linear(d, 3 * d, bias=cfg.qkv_bias)
        self.proj = nn.Linear(d, d)
        self.fc, self.fc_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, d // self.n_heads).unbind(2)
        att = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), is_causal=True,
                                             dropout_p=self.p if self.training else 0.0)
        x = x + F.dropout(self.proj(att.transpose(1, 2).reshape(b, t, d)), self.p, self.training)
        h = self.fc_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))
        return x + F.dropout(h, self.p, self.training)


class TorchGPT(nn.Module):
    """GPT-2 for a :class:`GPTConfig`: embeddings, pre-LN blocks, final LN, head (tied or not)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.emb_dim, eps=1e-5)
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
        x = F.dropout(x, self.cfg.drop_rate, self.training)
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        return x @ self.tok_emb.weight.T if self.head is None else self.head(x)


def adamw(model: TorchGPT, lr: float = 6e-4, weight_decay: float = 0.1, fused: bool = False
          ) -> torch.optim.AdamW:
    """AdamW with decay on matrices and embeddings only, as :func:`jaxbasics.gpt_train.decay_mask`
    (``fused``: one kernel per step for all parameters; on CPU and CUDA)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95),
                             fused=fused or None)


def load_from_flax(model: TorchGPT, params: dict) -> None:
    """Copy a Flax GPT's parameters (``split_params(gpt)[1]``) into ``model`` in place."""
    def put(dst: torch.Tensor, src, transpose: bool = False) -> None:
        arr = np.array(src)
        arr = arr.T if transpose else arr
        if tuple(dst.shape) != arr.shape:
            raise ValueError(f"shape mismatch: torch {tuple(dst.shape)} vs flax {arr.shape}")
        dst.copy_(torch.from_numpy(np.ascontiguousarray(arr)))

    with torch.no_grad():
        put(model.tok_emb.weight, params["tok_emb"]["embedding"])
        put(model.pos_emb.weight, params["pos_emb"]["embedding"])
        put(model.ln_f.weight, params["ln_f"]["scale"])
        put(model.ln_f.bias, params["ln_f"]["bias"])
        if model.head is not None:
            put(model.head.weight, params["head"]["kernel"], transpose=True)
        b = params["blocks"]
        for i, blk in enumerate(cast(list[_Block], model.blocks)):  # a ModuleList of _Block
            put(blk.ln1.weight, b["ln1"]["scale"][i])
            put(blk.ln1.bias, b["ln1"]["bias"][i])
            put(blk.ln2.weight, b["ln2"]["scale"][i])
            put(blk.ln2.bias, b["ln2"]["bias"][i])
            put(blk.qkv.weight, b["attn"]["qkv"]["kernel"][i], transpose=True)
            if blk.qkv.bias is not None:
                put(blk.qkv.bias, b["attn"]["qkv"]["bias"][i])
            for dst, src in ((blk.proj, b["attn"]["proj"]), (blk.fc, b["mlp"]["fc"]),
                             (blk.fc_proj, b["mlp"]["proj"])):
                put(dst.weight, src["kernel"][i], transpose=True)
                put(dst.bias, src["bias"][i])
