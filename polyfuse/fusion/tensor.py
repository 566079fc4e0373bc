"""Tensor fusion (outer product of [features ; 1]) and its low-rank factorization (LMF)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyfuse.fusion._common import ModalityProjection, check_positive, presence_matrix, zero_absent
from polyfuse.fusion.base import Fusion
from polyfuse.layers.mlp import MLP
from polyfuse.registry import FUSIONS
from polyfuse.types import EncoderOutput, FusionOutput


def _append_one(x: Tensor) -> Tensor:
    """[B, D] -> [B, D + 1] with a trailing constant 1 (keeps the lower-order terms in products)."""
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=-1)


@FUSIONS.register("tensor", level="feature")
class TensorFusion(Fusion):
    """Tensor Fusion Network: outer product of ``z_i = [proj_i(f_i) ; 1]`` over modalities, then an MLP.

    The flattened product has ``prod(rank_dim + 1)`` entries, so ``rank_dim`` stays small.
    An absent modality's projection is 0 (its 1 stays): only the lower-order terms remain.
    """

    def __init__(
        self, input_dims: dict[str, int], dim: int = 128, rank_dim: int = 16, hidden: int = 128, dropout: float = 0.1
    ) -> None:
        super().__init__(input_dims)
        for name, value in (("dim", dim), ("rank_dim", rank_dim), ("hidden", hidden)):
            check_positive(name, value)
        self.projs = nn.ModuleList(ModalityProjection(d, rank_dim, activation=True) for d in input_dims.values())
        product_dim = (rank_dim + 1) ** len(input_dims)
        if product_dim > 2_000_000:
            from polyfuse.config import ConfigError

            raise ConfigError(
                f"rank_dim: ({rank_dim}+1)^{len(input_dims)} = {product_dim} product features is too "
                "many; lower rank_dim or use low_rank_tensor"
            )
        self.norm = nn.LayerNorm(product_dim)
        self.mlp = MLP(product_dim, dim, hidden=hidden, layers=2, dropout=dropout)
        self.output_dim = dim

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        p = presence_matrix(present, self.modalities)
        product: Tensor | None = None
        for i, (proj, m) in enumerate(zip(self.projs, self.modalities)):
            z = _append_one(zero_absent(proj(features[m].pooled), p[:, i]))  # [B, r+1]
            product = z if product is None else (product.unsqueeze(-1) * z.unsqueeze(1)).flatten(1)
        assert product is not None
        return FusionOutput(pooled=self.mlp(self.norm(product)), modalities=self.modalities)


@FUSIONS.register("low_rank_tensor", level="feature")
class LowRankTensorFusion(Fusion):
    """Low-rank multimodal fusion (LMF): a low-rank factorization of the tensor fusion.

    Rank-``rank`` factors per modality are applied to ``[LN(f_i) ; 1]``, multiplied
    elementwise over the modalities and summed over the rank with learned weights.

    An absent modality is ``[0 ; 1]``: only its factors' bias rows take part.
    """

    def __init__(self, input_dims: dict[str, int], dim: int = 128, rank: int = 4) -> None:
        super().__init__(input_dims)
        check_positive("dim", dim)
        check_positive("rank", rank)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for d in input_dims.values())
        self.factors = nn.ParameterList(
            nn.Parameter(nn.init.xavier_normal_(torch.empty(rank, d + 1, dim))) for d in input_dims.values()
        )
        self.rank_weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, rank)).squeeze(0))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.output_dim = dim
        self.rank = rank

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        p = presence_matrix(present, self.modalities)
        fused: Tensor | None = None
        for i, (norm, factor, m) in enumerate(zip(self.norms, self.factors, self.modalities)):
            z = _append_one(zero_absent(norm(features[m].pooled), p[:, i]))  # [B, D_i+1]
            part = torch.einsum("bd,rdo->bro", z, factor)  # [B, rank, dim]
            fused = part if fused is None else fused * part
        assert fused is not None
        pooled = torch.einsum("bro,r->bo", fused, self.rank_weights) + self.bias
        return FusionOutput(pooled=pooled, modalities=self.modalities)
