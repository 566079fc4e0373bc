"""Encoders for precomputed frame sequences (MFCC frames, multichannel sensor data).

Input: ``values`` float [B,T,F], ``mask`` bool [B,T] (True = real frame, right padded). Tokens
are frames (``sequence_stats``: one token), zero at padded frames.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyfuse.errors import ConfigError
from polyfuse.encoders._checks import choice, divisible, positive
from polyfuse.encoders.base import Encoder
from polyfuse.layers import CLSToken, LearnedPositionalEmbedding, MaskedRNN, TransformerEncoder
from polyfuse.layers.pooling import masked_max, masked_mean, masked_min, masked_std, zero_masked
from polyfuse.registry import ENCODERS
from polyfuse.types import EncoderOutput


def _values_and_mask(inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    mask = inputs["mask"].bool()
    return zero_masked(inputs["values"], mask), mask


@ENCODERS.register("sequence_rnn", modalities=("sequence",))
class SequenceRNNEncoder(Encoder):
    """Input LayerNorm -> stacked GRU/LSTM (optionally bidirectional), padding-safe without packing.

    ``pool="last"``: last valid state of each direction; ``"mean"``: masked mean of the outputs.
    ``hidden`` is per direction (default ``dim`` / directions).
    """

    def __init__(
        self,
        feature_dim: int,
        dim: int = 128,
        cell: str = "gru",
        hidden: int | None = None,
        layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.1,
        pool: str = "last",
    ) -> None:
        super().__init__()
        hidden = hidden or max(1, dim // (2 if bidirectional else 1))
        positive("sequence_rnn", feature_dim=feature_dim, dim=dim, hidden=hidden, layers=layers)
        choice("sequence_rnn", "cell", cell, ("gru", "lstm"))
        self.pool = choice("sequence_rnn", "pool", pool, ("last", "mean"))
        self.input_norm = nn.LayerNorm(feature_dim)
        self.rnn = MaskedRNN(feature_dim, hidden, cell, layers, bidirectional, dropout)
        self.output_dim = self.rnn.output_size

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        values, mask = _values_and_mask(inputs)
        tokens, last = self.rnn(self.input_norm(values), mask.sum(dim=1))
        pooled = last if self.pool == "last" else masked_mean(tokens, mask)
        return EncoderOutput(tokens=tokens, pooled=pooled, mask=mask)


class _MaskedConvBlock(nn.Module):
    """Conv1d over time ('same' padding) -> LayerNorm over channels -> GELU -> dropout; padding re-zeroed."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(out_channels)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.residual = in_channels == out_channels

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # x [B,T,C]
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)
        h = self.drop(self.act(self.norm(h)))
        return zero_masked(x + h if self.residual else h, mask)


@ENCODERS.register("sequence_cnn", modalities=("sequence",))
class SequenceCNNEncoder(Encoder):
    """Multichannel 1-D conv stack over time (odd ``kernel_size``, residual after the first layer),
    time resolution kept; masked ``mean`` or ``max`` pooling."""

    def __init__(
        self,
        feature_dim: int,
        dim: int = 128,
        layers: int = 3,
        kernel_size: int = 5,
        dropout: float = 0.1,
        pool: str = "mean",
    ) -> None:
        super().__init__()
        positive("sequence_cnn", feature_dim=feature_dim, dim=dim, layers=layers, kernel_size=kernel_size)
        if kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size: expected an odd number such as 3, 5, 7, got {kernel_size}")
        self.pool = choice("sequence_cnn", "pool", pool, ("mean", "max"))
        widths = [feature_dim] + [dim] * layers
        self.blocks = nn.ModuleList(
            _MaskedConvBlock(widths[i], widths[i + 1], kernel_size, dropout) for i in range(layers)
        )
        self.output_dim = dim

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        x, mask = _values_and_mask(inputs)
        for block in self.blocks:
            x = block(x, mask)
        pooled = masked_mean(x, mask) if self.pool == "mean" else masked_max(x, mask)
        return EncoderOutput(tokens=x, pooled=pooled, mask=mask)


@ENCODERS.register("sequence_transformer", modalities=("sequence",))
class SequenceTransformerEncoder(Encoder):
    """Input LayerNorm -> Linear to ``dim`` -> learned positions -> pre-norm blocks; masked mean or CLS."""

    def __init__(
        self,
        feature_dim: int,
        dim: int = 128,
        max_length: int | None = 512,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        pool: str = "mean",
    ) -> None:
        super().__init__()
        max_length = max_length or 512
        positive("sequence_transformer", feature_dim=feature_dim, dim=dim, max_length=max_length, depth=depth, heads=heads)
        divisible("sequence_transformer", dim, heads)
        self.pool = choice("sequence_transformer", "pool", pool, ("mean", "cls"))
        self.input_norm = nn.LayerNorm(feature_dim)
        self.proj = nn.Linear(feature_dim, dim)
        self.positions = LearnedPositionalEmbedding(max_length, dim)
        self.cls = CLSToken(dim) if pool == "cls" else None
        self.drop = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(dim, depth, heads, mlp_ratio, dropout)
        self.output_dim = dim

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        values, mask = _values_and_mask(inputs)
        x = self.drop(self.positions(self.proj(self.input_norm(values))))  # [B,T,D]
        if self.cls is not None:
            x, full_mask = self.cls(x, mask)
            x = self.encoder(x, full_mask)
            tokens, pooled = x[:, 1:], x[:, 0]
        else:
            tokens = self.encoder(x, mask)
            pooled = masked_mean(tokens, mask)
        return EncoderOutput(tokens=zero_masked(tokens, mask), pooled=pooled, mask=mask)


_STATS = {"mean": masked_mean, "std": masked_std, "min": masked_min, "max": masked_max}


@ENCODERS.register("sequence_stats", modalities=("sequence",))
class SequenceStatsEncoder(Encoder):
    """Per-feature statistics over valid frames (``stats`` from mean, std, min, max), concatenated
    and linearly projected to ``dim`` (``project=False``: the raw statistics, width F * len(stats)).

    Raw features for early fusion; one token. Empty rows give zero statistics.
    """

    def __init__(
        self,
        feature_dim: int,
        dim: int = 128,
        stats: tuple[str, ...] = ("mean", "std", "min", "max"),
        project: bool = True,
    ) -> None:
        super().__init__()
        positive("sequence_stats", feature_dim=feature_dim, dim=dim)
        if not stats:
            raise ConfigError(f"stats: choose at least one of {', '.join(_STATS)}")
        for name in stats:
            choice("sequence_stats", "stats", name, _STATS)
        self.stats = tuple(stats)
        raw_dim = feature_dim * len(self.stats)
        self.proj = nn.Sequential(nn.LayerNorm(raw_dim), nn.Linear(raw_dim, dim)) if project else nn.Identity()
        self.output_dim = dim if project else raw_dim

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        values, mask = _values_and_mask(inputs)
        raw = torch.cat([_STATS[name](values, mask) for name in self.stats], dim=-1)  # [B, F*S]
        pooled = self.proj(raw)
        tokens = pooled.unsqueeze(1)
        return EncoderOutput(tokens=tokens, pooled=pooled, mask=mask.any(dim=1, keepdim=True))
