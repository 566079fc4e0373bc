"""Masked reductions over the time/token axis. Empty rows (all-false mask) give zeros, never NaN."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["masked_mean", "masked_max", "masked_min", "masked_std", "gather_last", "lengths_to_mask", "zero_masked"]


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean of tokens [B,T,D] over positions where mask [B,T] is true -> [B,D]; zeros for empty rows."""
    weights = mask.to(tokens.dtype).unsqueeze(-1)  # [B,T,1]
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def zero_masked(tokens: Tensor, mask: Tensor) -> Tensor:
    """tokens [B,T,D] with positions where mask [B,T] is false set to zero."""
    return tokens * mask.unsqueeze(-1).to(tokens.dtype)


def masked_max(tokens: Tensor, mask: Tensor) -> Tensor:
    """Max over valid positions of tokens [B,T,D] -> [B,D]; zeros for empty rows."""
    big = torch.finfo(tokens.dtype).max
    filled = tokens.masked_fill(~mask.unsqueeze(-1), -big).amax(dim=1)
    return torch.where(mask.any(dim=1, keepdim=True), filled, torch.zeros_like(filled))


def masked_min(tokens: Tensor, mask: Tensor) -> Tensor:
    """Min over valid positions of tokens [B,T,D] -> [B,D]; zeros for empty rows."""
    return -masked_max(-tokens, mask)


def masked_std(tokens: Tensor, mask: Tensor, eps: float = 1e-5) -> Tensor:
    """Standard deviation (population, sqrt(var + eps)) over valid positions -> [B,D]; zeros for empty rows."""
    mean = masked_mean(tokens, mask)
    var = masked_mean((tokens - mean.unsqueeze(1)) ** 2, mask)
    return torch.sqrt(var + eps) * mask.any(dim=1, keepdim=True).to(tokens.dtype)


def gather_last(tokens: Tensor, lengths: Tensor) -> Tensor:
    """tokens [B,T,D] at position ``lengths - 1`` per row -> [B,D]; zeros where lengths == 0."""
    index = (lengths.long() - 1).clamp(min=0)  # [B]
    picked = tokens.gather(1, index[:, None, None].expand(-1, 1, tokens.shape[2])).squeeze(1)
    return picked * (lengths > 0).unsqueeze(-1).to(tokens.dtype)


def lengths_to_mask(lengths: Tensor, max_length: int) -> Tensor:
    """[B] lengths -> [B, max_length] bool prefix mask."""
    positions = torch.arange(max_length, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)
