"""Attention fusions over the modalities' tokens: cross-modal attention and Fusion-in-Transformer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyfuse.fusion._common import check_heads, check_positive, normalize_weights, presence_matrix
from polyfuse.fusion.base import Fusion
from polyfuse.layers.pooling import masked_mean, zero_masked
from polyfuse.layers.transformer import CrossAttentionBlock, TransformerBlock
from polyfuse.registry import FUSIONS
from polyfuse.types import EncoderOutput, FusionOutput


def token_spans(lengths: list[int], offset: int = 0) -> Tensor:
    """[start, end) of each modality's tokens in a fused sequence: long [M, 2] (``extras["token_spans"]``)."""
    ends = torch.tensor(lengths, dtype=torch.long).cumsum(0) + offset
    return torch.stack([ends - torch.tensor(lengths, dtype=torch.long), ends], dim=1)


def segment_sums(x: Tensor, lengths: list[int]) -> Tensor:
    """Sum the last axis of ``x`` [..., sum(lengths)] per consecutive segment -> [..., len(lengths)]."""
    return torch.stack([part.sum(dim=-1) for part in torch.split(x, lengths, dim=-1)], dim=-1)


class TokenProjections(nn.Module):
    """Project each modality's tokens to ``dim`` and add a learned modality embedding.

    ``forward(features, present, modalities) -> (tokens: list[[B,T_i,dim]], masks: list[[B,T_i] bool])``;
    a token's mask is its own mask AND the modality being present.
    """

    def __init__(self, input_dims: dict[str, int], dim: int) -> None:
        super().__init__()
        self.projs = nn.ModuleList(nn.Linear(d, dim) for d in input_dims.values())
        self.modality_embed = nn.Parameter(torch.randn(len(input_dims), dim) * 0.02)

    def forward(
        self, features: dict[str, EncoderOutput], p: Tensor, modalities: tuple[str, ...]
    ) -> tuple[list[Tensor], list[Tensor]]:
        tokens, masks = [], []
        for i, (proj, m) in enumerate(zip(self.projs, modalities)):
            tokens.append(proj(features[m].tokens) + self.modality_embed[i])
            masks.append(features[m].mask.bool() & p[:, i : i + 1])
        return tokens, masks


@FUSIONS.register("cross_attention", level="attention")
class CrossAttentionFusion(Fusion):
    """Each modality's tokens attend to the concatenated tokens of all OTHER modalities.

    ``depth`` layers of cross-attention (+ residual, FFN), updated in parallel for every
    modality; then a masked mean per modality, concatenated and projected to ``dim``.
    Keys are masked by token mask AND presence. With a single input, its tokens attend to
    themselves. ``modality_weights`` is the attention mass each modality receives in the
    last layer. ``tokens``/``mask`` are all modalities' updated tokens.
    """

    def __init__(
        self,
        input_dims: dict[str, int],
        dim: int = 128,
        heads: int = 4,
        depth: int = 1,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(input_dims)
        for name, value in (("dim", dim), ("heads", heads), ("depth", depth)):
            check_positive(name, value)
        check_heads(dim, heads)
        n = len(input_dims)
        self.embed = TokenProjections(input_dims, dim)
        self.layers = nn.ModuleList(
            nn.ModuleList(CrossAttentionBlock(dim, heads, mlp_ratio, dropout) for _ in range(n)) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Sequential(nn.Linear(n * dim, dim), nn.GELU(), nn.Dropout(dropout))
        self.output_dim = dim

    def _context_of(self, i: int) -> list[int]:
        n = len(self.modalities)
        return [j for j in range(n) if j != i] if n > 1 else [i]

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        p = presence_matrix(present, self.modalities)  # [B,M]
        tokens, masks = self.embed(features, p, self.modalities)
        lengths = [t.shape[1] for t in tokens]
        received_parts: list[list[Tensor]] = [[] for _ in self.modalities]  # attention mass per key modality
        for depth, blocks in enumerate(self.layers):
            last = depth == len(self.layers) - 1
            updated = []
            for i, block in enumerate(blocks):
                ctx = self._context_of(i)
                context = torch.cat([tokens[j] for j in ctx], dim=1)
                context_mask = torch.cat([masks[j] for j in ctx], dim=1)
                x, weights = block(tokens[i], context, context_mask, need_weights=last)
                updated.append(x)
                if last and weights is not None:
                    per_query = segment_sums(weights.mean(dim=1), [lengths[j] for j in ctx])  # [B,Tq,|ctx|]
                    mass = masked_mean(per_query, masks[i])  # [B,|ctx|]; 0 for absent queries
                    for k, j in enumerate(ctx):
                        received_parts[j].append(mass[:, k])
            tokens = updated
        tokens = [self.norm(t) for t in tokens]
        received = torch.stack([torch.stack(parts, dim=0).sum(dim=0) for parts in received_parts], dim=1)  # [B,M]
        pooled = torch.cat([masked_mean(t, mk) for t, mk in zip(tokens, masks)], dim=-1)  # [B, M*dim]
        all_mask = torch.cat(masks, dim=1)
        return FusionOutput(
            pooled=self.out(pooled),
            tokens=zero_masked(torch.cat(tokens, dim=1), all_mask),
            mask=all_mask,
            modality_weights=normalize_weights(received, p),
            modalities=self.modalities,
            extras={"token_spans": token_spans(lengths)},
        )


@FUSIONS.register("fit", level="attention")
class FusionInTransformer(Fusion):
    """Fusion-in-Transformer: one shared pre-norm self-attention stack over every modality's tokens.

    Tokens are projected to ``dim`` plus a learned modality embedding, a CLS token is
    prepended, and each head's queries attend over the keys/values of every modality (masked
    by token mask AND presence). ``pooled`` is the CLS output; ``tokens``/``mask`` the fused
    sequence (CLS first); ``modality_weights`` the CLS attention mass per modality in the last
    layer, averaged over heads.
    """

    def __init__(
        self,
        input_dims: dict[str, int],
        dim: int = 128,
        heads: int = 4,
        depth: int = 2,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(input_dims)
        for name, value in (("dim", dim), ("heads", heads), ("depth", depth)):
            check_positive(name, value)
        check_heads(dim, heads)
        self.embed = TokenProjections(input_dims, dim)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.output_dim = dim

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        p = presence_matrix(present, self.modalities)
        tokens, masks = self.embed(features, p, self.modalities)
        batch = p.shape[0]
        x = torch.cat([self.cls.expand(batch, -1, -1)] + tokens, dim=1)  # [B, 1+sum T_i, D]
        mask = torch.cat([torch.ones_like(p[:, :1])] + masks, dim=1)
        for block in self.blocks[:-1]:
            x = block(x, mask)
        x, weights = self.blocks[-1].forward_with_weights(x, mask)  # weights [B,H,N,N]
        x = self.norm(x)
        cls_mass = weights[:, :, 0, 1:].mean(dim=1)  # [B, sum T_i]
        received = segment_sums(cls_mass, [t.shape[1] for t in tokens])  # [B,M]
        return FusionOutput(
            pooled=x[:, 0],
            tokens=zero_masked(x, mask),
            mask=mask,
            modality_weights=normalize_weights(received, p),
            modalities=self.modalities,
            extras={"token_spans": token_spans([t.shape[1] for t in tokens], offset=1)},  # after CLS
        )
