"""Text encoders trained from scratch: Transformer, GRU/LSTM, bag of embeddings.

Input: ``input_ids`` long [B,L], ``attention_mask`` long [B,L] (1 = real token, right padded).
Tokens align with ``input_ids`` (no CLS among them) and are zero at padded positions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyfuse.encoders._checks import choice, divisible, positive
from polyfuse.encoders.base import Encoder
from polyfuse.layers import MLP, CLSToken, LearnedPositionalEmbedding, MaskedRNN, TransformerEncoder
from polyfuse.layers.pooling import masked_mean, zero_masked
from polyfuse.registry import ENCODERS
from polyfuse.types import EncoderOutput


def _ids_and_mask(inputs: dict[str, Tensor], vocab_size: int) -> tuple[Tensor, Tensor]:
    """Token ids (out-of-vocabulary ids -> 0 so that lookups never fail) and the bool mask."""
    ids = inputs["input_ids"].long()
    ids = torch.where((ids >= 0) & (ids < vocab_size), ids, torch.zeros_like(ids))
    return ids, inputs["attention_mask"].bool()


@ENCODERS.register("text_transformer", modalities=("text",))
class TextTransformerEncoder(Encoder):
    """Token + learned position embeddings, pre-norm Transformer blocks; masked mean or CLS pooling."""

    def __init__(
        self,
        vocab_size: int,
        dim: int = 128,
        pad_id: int = 0,
        max_length: int | None = 512,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        pool: str = "mean",
    ) -> None:
        super().__init__()
        max_length = max_length or 512
        positive("text_transformer", vocab_size=vocab_size, dim=dim, max_length=max_length, depth=depth, heads=heads)
        divisible("text_transformer", dim, heads)
        self.pool = choice("text_transformer", "pool", pool, ("mean", "cls"))
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id if 0 <= pad_id < vocab_size else None)
        self.positions = LearnedPositionalEmbedding(max_length, dim)
        self.cls = CLSToken(dim) if pool == "cls" else None
        self.drop = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(dim, depth, heads, mlp_ratio, dropout)
        self.output_dim = dim

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        ids, mask = _ids_and_mask(inputs, self.vocab_size)
        x = self.drop(self.positions(self.embed(ids)))  # [B,L,D]
        if self.cls is not None:
            x, full_mask = self.cls(x, mask)  # CLS first, always valid
            x = self.encoder(x, full_mask)
            tokens, pooled = x[:, 1:], x[:, 0]
        else:
            tokens = self.encoder(x, mask)
            pooled = masked_mean(tokens, mask)
        return EncoderOutput(tokens=zero_masked(tokens, mask), pooled=pooled, mask=mask)


@ENCODERS.register("text_rnn", modalities=("text",))
class TextRNNEncoder(Encoder):
    """Embeddings -> stacked GRU/LSTM (optionally bidirectional), padding-safe without packing.

    ``pool="last"``: the last valid hidden state of each direction; ``"mean"``: masked mean.
    ``hidden`` is per direction (default ``dim`` / directions); output_dim = hidden * directions.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 128,
        pad_id: int = 0,
        embedding_dim: int | None = None,
        cell: str = "gru",
        hidden: int | None = None,
        layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.1,
        pool: str = "last",
    ) -> None:
        super().__init__()
        directions = 2 if bidirectional else 1
        hidden = hidden or max(1, dim // directions)
        embedding_dim = embedding_dim or dim
        positive("text_rnn", vocab_size=vocab_size, dim=dim, hidden=hidden, layers=layers, embedding_dim=embedding_dim)
        choice("text_rnn", "cell", cell, ("gru", "lstm"))
        self.pool = choice("text_rnn", "pool", pool, ("last", "mean"))
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id if 0 <= pad_id < vocab_size else None)
        self.drop = nn.Dropout(dropout)
        self.rnn = MaskedRNN(embedding_dim, hidden, cell, layers, bidirectional, dropout)
        self.output_dim = self.rnn.output_size

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        ids, mask = _ids_and_mask(inputs, self.vocab_size)
        tokens, last = self.rnn(self.drop(self.embed(ids)), mask.sum(dim=1))
        pooled = last if self.pool == "last" else masked_mean(tokens, mask)
        return EncoderOutput(tokens=tokens, pooled=pooled, mask=mask)


@ENCODERS.register("bag_of_embeddings", modalities=("text",))
class BagOfEmbeddingsEncoder(Encoder):
    """Masked mean of token embeddings, then an MLP (fastText-like); tokens are the embeddings."""

    def __init__(
        self,
        vocab_size: int,
        dim: int = 128,
        pad_id: int = 0,
        hidden: int | None = None,
        layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        positive("bag_of_embeddings", vocab_size=vocab_size, dim=dim, layers=layers)
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id if 0 <= pad_id < vocab_size else None)
        self.mlp = MLP(dim, dim, hidden=hidden or dim, layers=layers, dropout=dropout)
        self.output_dim = dim

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        ids, mask = _ids_and_mask(inputs, self.vocab_size)
        tokens = zero_masked(self.embed(ids), mask)  # [B,L,D]
        return EncoderOutput(tokens=tokens, pooled=self.mlp(masked_mean(tokens, mask)), mask=mask)
