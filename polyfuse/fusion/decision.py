"""Decision-level fusions: every modality is a branch that goes through the heads on its own.

``MultimodalModel.apply_head`` runs each head on every branch and takes the weighted sum
with ``branch_weights``, so the combination happens on the predictions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyfuse.errors import ConfigError
from polyfuse.fusion._common import (
    ModalityProjection,
    check_positive,
    masked_softmax_weights,
    presence_matrix,
    zero_absent,
)
from polyfuse.fusion.base import Fusion
from polyfuse.fusion.pooled import MissingAwareConcat
from polyfuse.registry import FUSIONS
from polyfuse.types import EncoderOutput, FusionOutput

COMBINE_MODES = ("mean", "learned")
FUSED_BRANCH = "fused"


def _weighted_sum(branches: Tensor, weights: Tensor) -> Tensor:
    """[B, n, D] branches, [B, n] weights -> [B, D]."""
    return (branches * weights.unsqueeze(-1)).sum(dim=1)


class _ModalityBranches(Fusion):
    """Shared part: one projection per modality; absent modalities give an all-zero branch."""

    def __init__(self, input_dims: dict[str, int], dim: int, dropout: float) -> None:
        super().__init__(input_dims)
        check_positive("dim", dim)
        self.branch_projs = nn.ModuleList(
            ModalityProjection(d, dim, activation=True, dropout=dropout) for d in input_dims.values()
        )
        self.output_dim = dim

    def modality_branches(self, features: dict[str, EncoderOutput], p: Tensor) -> list[Tensor]:
        return [
            zero_absent(proj(features[m].pooled), p[:, i])
            for i, (proj, m) in enumerate(zip(self.branch_projs, self.modalities))
        ]


@FUSIONS.register("late", level="decision")
class LateFusion(_ModalityBranches):
    """Decision-level fusion: per-modality branches whose head outputs are averaged.

    ``combine="mean"`` weighs the present modalities equally; ``"learned"`` uses a softmax of
    learned per-modality logits, renormalized over the present modalities.
    """

    def __init__(self, input_dims: dict[str, int], dim: int = 128, combine: str = "mean", dropout: float = 0.1) -> None:
        super().__init__(input_dims, dim, dropout)
        if combine not in COMBINE_MODES:
            raise ConfigError(f"combine: {combine!r} is not allowed; allowed: {', '.join(COMBINE_MODES)}")
        self.combine = combine
        if combine == "learned":
            self.logits = nn.Parameter(torch.zeros(len(input_dims)))
        else:  # equal weights: a constant, not a parameter
            self.register_buffer("logits", torch.zeros(len(input_dims)), persistent=False)

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        p = presence_matrix(present, self.modalities)  # [B,M]
        branches = self.modality_branches(features, p)
        logits = self.logits.to(branches[0].dtype).expand(p.shape[0], -1)
        weights = masked_softmax_weights(logits, p)  # [B,M]; uniform where nothing is present
        pooled = _weighted_sum(torch.stack(branches, dim=1), weights)
        return FusionOutput(
            pooled=pooled,
            branches=dict(zip(self.modalities, branches)),
            branch_weights=weights,
            modality_weights=weights,
            modalities=self.modalities,
        )


@FUSIONS.register("hybrid", level="hybrid")
class HybridFusion(_ModalityBranches):
    """A feature-level fused branch (concat-style) plus per-modality decision branches.

    Branches are ``"fused"`` then one per modality; learned branch weights (softmax of
    learned logits) are masked by presence (the fused branch is always usable).
    """

    def __init__(self, input_dims: dict[str, int], dim: int = 128, dropout: float = 0.1) -> None:
        super().__init__(input_dims, dim, dropout)
        if FUSED_BRANCH in input_dims:
            raise ConfigError(f"hybrid fusion needs the input name {FUSED_BRANCH!r} for its fused branch; rename that input")
        self.concat = MissingAwareConcat(list(input_dims.values()))
        self.fused_proj = nn.Sequential(nn.Linear(self.concat.output_dim, dim), nn.GELU(), nn.Dropout(dropout))
        self.logits = nn.Parameter(torch.zeros(len(input_dims) + 1))

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        p = presence_matrix(present, self.modalities)  # [B,M]
        fused = self.fused_proj(self.concat([features[m].pooled for m in self.modalities], p))
        branches = [fused] + self.modality_branches(features, p)
        usable = torch.cat([torch.ones_like(p[:, :1]), p], dim=1)  # [B, M+1]
        logits = self.logits.to(fused.dtype).expand(p.shape[0], -1)
        weights = masked_softmax_weights(logits, usable)
        pooled = _weighted_sum(torch.stack(branches, dim=1), weights)
        return FusionOutput(
            pooled=pooled,
            branches=dict(zip((FUSED_BRANCH,) + self.modalities, branches)),
            branch_weights=weights,
            modality_weights=masked_softmax_weights(logits[:, 1:], p),
            modalities=self.modalities,
        )
