"""Masked reductions over the time/token axis. Empty rows (all-false mask) give zeros, never NaN.

Masked positions are dropped with ``torch.where``, never by multiplying with the mask: a NaN or
inf at a masked position (a missing modality's placeholder) must not reach the result."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["masked_mean", "masked_max", "masked_min", "masked_std", "gather_last", "lengths_to_mask", "zero_masked"]


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean of tokens [B,T,D] over positions where mask [B,T] is true -> [B,D]; zeros for empty rows."""
    keep = mask.bool().unsqueeze(-1)  # [B,T,1]
    total = torch.where(keep, tokens, torch.zeros_like(tokens)).sum(dim=1)  # where, not *: NaN * 0 is NaN
    return total / keep.to(tokens.dtype).sum(dim=1).clamp(min=1.0)


def zero_masked(tokens: Tensor, mask: Tensor) -> Tensor:
    """tokens [B,T,D] with positions where mask [B,T] is false set to zero."""
    return torch.where(mask.bool().unsqueeze(-1), tokens, torch.zeros_like(tokens))


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
    std = torch.sqrt(var + eps)
    return torch.where(mask.bool().any(dim=1, keepdim=True), std, torch.zeros_like(std))


def gather_last(tokens: Tensor, lengths: Tensor) -> Tensor:
    """tokens [B,T,D] at position ``lengths - 1`` per row -> [B,D]; zeros where lengths == 0."""
    index = (lengths.long() - 1).clamp(min=0)  # [B]
    picked = tokens.gather(1, index[:, None, None].expand(-1, 1, tokens.shape[2])).squeeze(1)
    return torch.where((lengths > 0).unsqueeze(-1), picked, torch.zeros_like(picked))


def lengths_to_mask(lengths: Tensor, max_length: int) -> Tensor:
    """[B] lengths -> [B, max_length] bool prefix mask."""
    positions = torch.arange(max_length, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)
