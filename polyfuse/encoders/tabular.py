"""Tabular encoders: an MLP over category embeddings + numbers, and an FT-Transformer.

Input: ``numeric`` float [B,N] (normalized), ``categorical`` long [B,K] (0 = unknown). Column k
has ``cat_cardinalities[k]`` ids (0 included); ids outside that range are read as 0 (unknown).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyfuse.errors import ConfigError
from polyfuse.encoders._checks import divisible, positive
from polyfuse.encoders.base import Encoder
from polyfuse.layers import MLP, CLSToken, TransformerEncoder
from polyfuse.registry import ENCODERS
from polyfuse.types import EncoderOutput


def _check_columns(encoder: str, num_numeric: int, cat_cardinalities: list[int]) -> list[int]:
    cards = [int(c) for c in cat_cardinalities]
    if num_numeric < 0 or any(c < 1 for c in cards):
        raise ConfigError(f"{encoder} got a bad column description num_numeric={num_numeric}, cat_cardinalities={cards}")
    if num_numeric == 0 and not cards:
        raise ConfigError(f"the tabular input has no numeric and no categorical columns ({encoder})")
    return cards


def embedding_size(cardinality: int) -> int:
    """fastai's rule of thumb for a category embedding width, capped at 32."""
    return max(2, min(32, round(1.6 * cardinality**0.56)))


class _CategoryLookup(nn.Module):
    """categorical [B,K] -> ids into one shared table [B,K]: per-column offsets, unknown for bad ids."""

    def __init__(self, cardinalities: list[int]) -> None:
        super().__init__()
        offsets = torch.tensor([0] + cardinalities[:-1], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        self.register_buffer("cards", torch.tensor(cardinalities, dtype=torch.long), persistent=False)
        self.total = int(sum(cardinalities))

    def forward(self, categorical: Tensor) -> Tensor:
        ids = categorical.long()
        ids = torch.where((ids >= 0) & (ids < self.cards), ids, torch.zeros_like(ids))
        return ids + self.offsets


@ENCODERS.register("tabular_mlp", modalities=("tabular",))
class TabularMLPEncoder(Encoder):
    """Category embeddings (``embedding_dim`` each, default by cardinality) concatenated with the
    numbers -> MLP (``layers`` Linear layers, hidden width ``hidden``) -> ``dim``. One token."""

    def __init__(
        self,
        dim: int = 128,
        num_numeric: int = 0,
        cat_cardinalities: list[int] | None = None,
        embedding_dim: int | None = None,
        hidden: int | None = None,
        layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        cards = _check_columns("tabular_mlp", num_numeric, list(cat_cardinalities or []))
        positive("tabular_mlp", dim=dim, layers=layers)
        widths = [embedding_dim or embedding_size(c) for c in cards]
        self.embeddings = nn.ModuleList(nn.Embedding(c, w) for c, w in zip(cards, widths))
        self.cards = cards
        self.num_numeric = num_numeric
        self.mlp = MLP(num_numeric + sum(widths), dim, hidden=hidden or dim, layers=layers, dropout=dropout, norm=True)
        self.output_dim = dim

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        parts = [inputs["numeric"].float()] if self.num_numeric else []
        if self.cards:
            ids = inputs["categorical"].long()
            for k, (embed, card) in enumerate(zip(self.embeddings, self.cards)):
                col = ids[:, k]
                parts.append(embed(torch.where((col >= 0) & (col < card), col, torch.zeros_like(col))))
        pooled = self.mlp(torch.cat(parts, dim=-1))  # [B,D]
        tokens = pooled.unsqueeze(1)
        return EncoderOutput(tokens=tokens, pooled=pooled, mask=torch.ones_like(tokens[..., 0], dtype=torch.bool))


@ENCODERS.register("tabular_linear", modalities=("tabular",))
class TabularLinearEncoder(Encoder):
    """A map linear in the one-hot categories and the numbers: ``numeric @ W + sum_k E[cat_k] + b``.

    Logistic / ridge regression on standardized numbers and one-hot categories, written as a
    layer; what ``train.solver: convex`` fits for a tabular input. One token."""

    def __init__(self, dim: int = 128, num_numeric: int = 0, cat_cardinalities: list[int] | None = None) -> None:
        super().__init__()
        cards = _check_columns("tabular_linear", num_numeric, list(cat_cardinalities or []))
        positive("tabular_linear", dim=dim)
        self.num_numeric, self.cards = num_numeric, cards
        self.numeric = nn.Linear(num_numeric, dim, bias=False) if num_numeric else None
        self.lookup = _CategoryLookup(cards) if cards else None
        self.categories = nn.Embedding(self.lookup.total, dim) if self.lookup is not None else None  # one row per (column, id)
        if self.categories is not None:
            nn.init.normal_(self.categories.weight, std=dim**-0.5)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.output_dim = dim

    @property
    def feature_dim(self) -> int:
        """Width of the design row this map is linear in: the numbers, then one column per (column, id)."""
        return self.num_numeric + (self.lookup.total if self.lookup is not None else 0)

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        pooled = self.bias.expand(inputs["numeric" if self.num_numeric else "categorical"].shape[0], -1)  # [B,D]
        if self.numeric is not None:
            pooled = pooled + self.numeric(inputs["numeric"].float())
        if self.categories is not None and self.lookup is not None:
            pooled = pooled + self.categories(self.lookup(inputs["categorical"])).sum(dim=1)  # [B,K,D] -> [B,D]
        tokens = pooled.unsqueeze(1)
        return EncoderOutput(tokens=tokens, pooled=pooled, mask=torch.ones_like(tokens[..., 0], dtype=torch.bool))


@ENCODERS.register("tabular_transformer", modalities=("tabular",))
class TabularTransformerEncoder(Encoder):
    """FT-Transformer: one token per feature (number * learned vector + bias; category embedding +
    column bias), a CLS token, pre-norm blocks. Tokens: CLS then the features; pooled: CLS."""

    def __init__(
        self,
        dim: int = 128,
        num_numeric: int = 0,
        cat_cardinalities: list[int] | None = None,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4.0 / 3.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        cards = _check_columns("tabular_transformer", num_numeric, list(cat_cardinalities or []))
        positive("tabular_transformer", dim=dim, depth=depth, heads=heads)
        divisible("tabular_transformer", dim, heads)
        self.num_numeric, self.num_categorical = num_numeric, len(cards)
        scale = dim**-0.5
        if num_numeric:
            self.numeric_weight = nn.Parameter(torch.randn(num_numeric, dim) * scale)  # [N,D]
            self.numeric_bias = nn.Parameter(torch.randn(num_numeric, dim) * scale)
        if cards:
            self.lookup = _CategoryLookup(cards)
            self.category_embed = nn.Embedding(self.lookup.total, dim)
            nn.init.normal_(self.category_embed.weight, std=scale)
            self.category_bias = nn.Parameter(torch.randn(len(cards), dim) * scale)  # [K,D]
        self.cls = CLSToken(dim)
        self.encoder = TransformerEncoder(dim, depth, heads, mlp_ratio, dropout)
        self.output_dim = dim

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        parts = []
        if self.num_numeric:
            numeric = inputs["numeric"].float()
            parts.append(numeric.unsqueeze(-1) * self.numeric_weight + self.numeric_bias)  # [B,N,D]
        if self.num_categorical:
            parts.append(self.category_embed(self.lookup(inputs["categorical"])) + self.category_bias)  # [B,K,D]
        x, _ = self.cls(torch.cat(parts, dim=1))  # [B,1+N+K,D]
        tokens = self.encoder(x)
        return EncoderOutput(tokens=tokens, pooled=tokens[:, 0], mask=torch.ones_like(tokens[..., 0], dtype=torch.bool))
