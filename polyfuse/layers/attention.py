"""Masked multi-head attention (self and cross) built on ``scaled_dot_product_attention``.

Masks are bool with True = a real (valid) key. Masked keys get exactly zero weight. A query
whose keys are all masked (a missing modality) gets a zero output, never NaN: its row falls
back to attending over every key, and the result is multiplied by zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def safe_key_mask(key_mask: Tensor) -> tuple[Tensor, Tensor]:
    """(mask usable by softmax, rows with at least one valid key) for ``key_mask`` [B,Tk] bool.

    Rows with no valid key get an all-true mask so that softmax stays finite; callers zero those
    rows' outputs with the second tensor ([B] bool).
    """
    has_key = key_mask.any(dim=-1)  # [B]
    return key_mask | ~has_key.unsqueeze(-1), has_key


class MultiHeadAttention(nn.Module):
    """Multi-head attention with a key padding mask; self-attention when key is value is query.

    ``forward(query [B,Tq,D], key [B,Tk,Dk], value [B,Tk,Dk] | None, key_mask [B,Tk] bool | None,
    need_weights) -> (out [B,Tq,D], weights [B,H,Tq,Tk] | None)``. ``value`` defaults to ``key``.
    """

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.0, kv_dim: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by heads={heads}")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        kv_dim = kv_dim or dim
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_dim, dim)
        self.v_proj = nn.Linear(kv_dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.dropout = float(dropout)

    def _split(self, x: Tensor) -> Tensor:  # [B,T,D] -> [B,H,T,Dh]
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor | None = None,
        key_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        value = key if value is None else value
        q = self._split(self.q_proj(query))
        k = self._split(self.k_proj(key))
        v = self._split(self.v_proj(value))
        has_key: Tensor | None = None
        attn_mask: Tensor | None = None
        if key_mask is not None:
            usable, has_key = safe_key_mask(key_mask.bool())
            attn_mask = usable[:, None, None, :]  # [B,1,1,Tk]
            # masked keys/values get exact zeros: attention weight 0 times a NaN value is still NaN
            k = torch.where(attn_mask.transpose(-1, -2), k, torch.zeros_like(k))
            v = torch.where(attn_mask.transpose(-1, -2), v, torch.zeros_like(v))
        dropout = self.dropout if self.training else 0.0
        weights: Tensor | None = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # [B,H,Tq,Tk]
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, dropout, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
        out = self.out_proj(out.transpose(1, 2).reshape(query.shape[0], query.shape[1], self.dim))
        if has_key is not None:
            out = torch.where(has_key[:, None, None], out, torch.zeros_like(out))
            if weights is not None:
                weights = torch.where(has_key[:, None, None, None], weights, torch.zeros_like(weights))
        return out, weights


def reference_attention(
    query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor | None = None
) -> Tensor:
    """Single-head masked attention written plainly (for tests and readers): [B,Tq,D] -> [B,Tq,Dv]."""
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask.bool()[:, None, :], float("-inf"))
        has_key = key_mask.bool().any(-1)
        scores = torch.where(has_key[:, None, None], scores, torch.zeros_like(scores))
        return (scores.softmax(-1) @ value) * has_key[:, None, None].to(value.dtype)
    return scores.softmax(-1) @ value
