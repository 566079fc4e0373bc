"""Small helpers shared by the fusions: presence matrices, zeroing absent rows, weight normalization."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn


def presence_matrix(present: Mapping[str, Tensor], modalities: Sequence[str]) -> Tensor:
    """Stack the per-modality present masks into a bool [B, M] matrix (order ``modalities``)."""
    return torch.stack([present[m].bool() for m in modalities], dim=1)


def zero_absent(x: Tensor, present: Tensor) -> Tensor:
    """``x`` [B, ...] with the rows where ``present`` [B] is False set to exactly 0 (no leak of NaN/inf)."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where(present.view(shape), x, torch.zeros_like(x))


def normalize_weights(raw: Tensor, present: Tensor) -> Tensor:
    """Per-modality weights [B, M] that sum to 1 over the present modalities.

    ``raw`` [B, M] holds non-negative scores. Absent modalities get 0. A row whose present
    scores are all 0 shares the weight equally among its present modalities; a row with
    nothing present gets uniform weights (nothing to attribute).
    """
    p = present.to(raw.dtype)
    scores = raw * p
    total = scores.sum(dim=1, keepdim=True)
    count = p.sum(dim=1, keepdim=True)
    by_score = scores / total.clamp(min=torch.finfo(raw.dtype).tiny)
    by_presence = p / count.clamp(min=1.0)
    uniform = torch.full_like(raw, 1.0 / raw.shape[1])
    return torch.where(total > 0, by_score, torch.where(count > 0, by_presence, uniform))


def masked_softmax_weights(logits: Tensor, present: Tensor, empty: str = "uniform") -> Tensor:
    """Softmax of ``logits`` [B, M] over the present modalities; absent ones get 0.

    A row with nothing present gets uniform weights (``empty="uniform"``) or zeros (``"zeros"``).
    """
    filled = logits.masked_fill(~present, torch.finfo(logits.dtype).min)
    weights = filled.softmax(dim=1) * present.to(logits.dtype)
    if empty == "zeros":
        return weights
    any_present = present.any(dim=1, keepdim=True)
    return torch.where(any_present, weights, torch.full_like(weights, 1.0 / logits.shape[1]))


class ModalityProjection(nn.Sequential):
    """LayerNorm -> Linear (-> GELU) from one modality's width to the fusion width."""

    def __init__(self, in_dim: int, out_dim: int, activation: bool = False, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = [nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim)]
        if activation:
            layers.append(nn.GELU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


def check_positive(name: str, value: int) -> None:
    """Reject non-positive sizes with a ConfigError naming the fusion parameter."""
    from polyfuse.config import ConfigError

    if int(value) < 1:
        raise ConfigError(f"{name}: must be a positive integer, got {value!r}")


def check_heads(dim: int, heads: int) -> None:
    """Attention fusions need ``dim`` divisible by ``heads``."""
    from polyfuse.config import ConfigError

    if dim % heads:
        raise ConfigError(f"heads: dim {dim} must be divisible by heads, got {heads}")
