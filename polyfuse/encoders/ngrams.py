"""``text_ngrams``: a learned linear map over sparse word + character n-gram TF-IDF features.

Input (a text input with ``tokenizer: ngrams``): ``input_ids`` int64 [B,K] feature indices,
``weights`` float [B,K] their TF-IDF values (0 at padding), ``attention_mask`` [B,K].
``pooled = sum_k weights_k * E[ids_k] (+ bias)``: exactly a linear layer over the sparse
TF-IDF vector (``embedding_bag``; a gather and a weighted sum while exporting to ONNX); ``feature_dropout`` drops
features in training. Without ``weights`` (plain token ids) every id counts once per occurrence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.errors import ConfigError
from polyfuse.encoders._checks import positive, required
from polyfuse.encoders.base import Encoder
from polyfuse.registry import ENCODERS
from polyfuse.types import EncoderOutput


@ENCODERS.register("text_ngrams", modalities=("text",), tokenizer="ngrams")
class TextNgramEncoder(Encoder):
    """Sparse n-gram TF-IDF -> linear map to ``dim`` (needs the text input's ``tokenizer: ngrams``). One token."""

    def __init__(self, vocab_size: int | None = None, dim: int = 128, feature_dropout: float = 0.1) -> None:
        super().__init__()
        required("text_ngrams", vocab_size=vocab_size)
        assert vocab_size is not None
        positive("text_ngrams", vocab_size=vocab_size, dim=dim)
        if not 0.0 <= float(feature_dropout) < 1.0:
            raise ConfigError(f"feature_dropout: must be in [0, 1), got {feature_dropout}")
        self.feature_dropout = float(feature_dropout)
        self.table = nn.Embedding(int(vocab_size), dim)
        nn.init.normal_(self.table.weight, std=dim**-0.5)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.output_dim = dim

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        ids = inputs["input_ids"].long().clamp(0, self.table.num_embeddings - 1)  # [B,K]
        mask = inputs["attention_mask"].float()  # [B,K]
        weights = inputs["weights"].float() * mask if "weights" in inputs else mask  # [B,K]
        if self.training and self.feature_dropout > 0:
            weights = weights * (torch.rand_like(weights) >= self.feature_dropout).to(weights.dtype) / (1 - self.feature_dropout)
        present = inputs["attention_mask"].bool().any(dim=1)  # [B]
        if torch.onnx.is_in_onnx_export():  # a gather and a weighted sum: what every exporter knows
            pooled = (self.table(ids) * weights.unsqueeze(-1)).sum(dim=1) + self.bias  # [B,D]
        else:  # the same sum without the [B,K,D] intermediate (reviews have ~1,500 n-grams each)
            pooled = F.embedding_bag(ids, self.table.weight, per_sample_weights=weights, mode="sum") + self.bias
        pooled = torch.where(present[:, None], pooled, torch.zeros_like(pooled))
        return EncoderOutput(tokens=pooled.unsqueeze(1), pooled=pooled, mask=present[:, None])
