"""Fusions of the pooled features: concatenation, sum and elementwise product."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyfuse.fusion._common import ModalityProjection, check_positive, presence_matrix, zero_absent
from polyfuse.fusion.base import Fusion
from polyfuse.registry import FUSIONS
from polyfuse.types import EncoderOutput, FusionOutput


class MissingAwareConcat(nn.Module):
    """Per-modality LayerNorm of the pooled features; a learned vector stands in for an absent modality.

    ``forward(pooled: list[[B, D_i]], present [B, M] bool) -> [B, sum D_i]``.
    """

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)
        self.missing = nn.ParameterList(nn.Parameter(torch.randn(d) * 0.02) for d in dims)
        self.output_dim = sum(dims)

    def forward(self, pooled: list[Tensor], present: Tensor) -> Tensor:
        parts = []
        for i, (norm, missing) in enumerate(zip(self.norms, self.missing)):
            normed = norm(pooled[i])
            parts.append(torch.where(present[:, i : i + 1], normed, missing.expand_as(normed)))
        return torch.cat(parts, dim=-1)


@FUSIONS.register("concat", level="feature")
class ConcatFusion(Fusion):
    """Concatenate the normalized pooled features (learned "missing" vectors), then Linear -> GELU to ``dim``."""

    def __init__(self, input_dims: dict[str, int], dim: int = 128, dropout: float = 0.1) -> None:
        super().__init__(input_dims)
        check_positive("dim", dim)
        self.concat = MissingAwareConcat(list(input_dims.values()))
        self.proj = nn.Sequential(nn.Linear(self.concat.output_dim, dim), nn.GELU(), nn.Dropout(dropout))
        self.output_dim = dim

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        p = presence_matrix(present, self.modalities)
        joined = self.concat([features[m].pooled for m in self.modalities], p)
        return FusionOutput(pooled=self.proj(joined), modalities=self.modalities)


@FUSIONS.register("linear", level="feature")
class LinearFusion(Fusion):
    """The pooled features as they are (absent -> 0), concatenated, then one Linear to ``dim``.

    No normalization and no activation: with a head without hidden layer the model is linear in
    the encoders' outputs, which is what ``train.solver: convex`` fits exactly (logistic / ridge
    regression on fixed features).
    """

    def __init__(self, input_dims: dict[str, int], dim: int = 128) -> None:
        super().__init__(input_dims)
        check_positive("dim", dim)
        self.proj = nn.Linear(sum(input_dims.values()), dim)
        self.output_dim = dim

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        p = presence_matrix(present, self.modalities)  # [B,M]
        parts = [zero_absent(features[m].pooled, p[:, i]) for i, m in enumerate(self.modalities)]  # [B, D_i]
        return FusionOutput(pooled=self.proj(torch.cat(parts, dim=-1)), modalities=self.modalities)


class _ProjectedPooled(Fusion):
    """Shared part of sum / product: project every modality's pooled features to ``dim``."""

    def __init__(self, input_dims: dict[str, int], dim: int) -> None:
        super().__init__(input_dims)
        check_positive("dim", dim)
        self.projs = nn.ModuleList(ModalityProjection(d, dim) for d in input_dims.values())
        self.output_dim = dim

    def projected(self, features: dict[str, EncoderOutput]) -> Tensor:
        """[B, M, dim]: each modality's projection, in order."""
        return torch.stack([proj(features[m].pooled) for proj, m in zip(self.projs, self.modalities)], dim=1)


@FUSIONS.register("sum", level="feature")
class SumFusion(_ProjectedPooled):
    """Sum (``mean=True``: mean) of the projected pooled features over the present modalities."""

    def __init__(self, input_dims: dict[str, int], dim: int = 128, mean: bool = True) -> None:
        super().__init__(input_dims, dim)
        self.mean = bool(mean)

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        p = presence_matrix(present, self.modalities)  # [B,M]
        x = self.projected(features)  # [B,M,D]
        total = torch.where(p.unsqueeze(-1), x, torch.zeros_like(x)).sum(dim=1)
        if self.mean:
            total = total / p.sum(dim=1, keepdim=True).clamp(min=1).to(total.dtype)
        return FusionOutput(pooled=total, modalities=self.modalities)


@FUSIONS.register("product", level="feature")
class ProductFusion(_ProjectedPooled):
    """Elementwise product of the projected pooled features over the present modalities (1 for absent)."""

    def __init__(self, input_dims: dict[str, int], dim: int = 128) -> None:
        super().__init__(input_dims, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        p = presence_matrix(present, self.modalities)
        x = self.projected(features)  # [B,M,D]
        prod = torch.where(p.unsqueeze(-1), x, torch.ones_like(x)).prod(dim=1)
        return FusionOutput(pooled=self.norm(prod), modalities=self.modalities)


__all__ = ["ConcatFusion", "LinearFusion", "MissingAwareConcat", "ProductFusion", "SumFusion"]
