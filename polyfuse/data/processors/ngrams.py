"""Sparse word and character n-gram TF-IDF features (scikit-learn), saved as JSON (never pickled).

The classical text representation that wins on small tables: word 1-2-grams plus character
2-5-grams inside word boundaries, sublinear TF, IDF and L2 normalization fitted on the training
split. A row becomes the indices and weights of its non-zero features; the ``text_ngrams``
encoder learns a linear map over them.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def _vectorizer(analyzer: str, ngram_range: tuple[int, int], max_features: int, min_df: int) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        analyzer=analyzer, ngram_range=ngram_range, max_features=max_features, min_df=min_df,
        sublinear_tf=True, lowercase=True, dtype=np.float32,
    )


class NgramVectorizer:
    """Word + character n-gram TF-IDF; ``transform(text) -> (indices int64 [K], weights float32 [K])``."""

    def __init__(self, max_features: int = 50000, min_df: int = 2) -> None:
        self.max_features = int(max_features)
        self.min_df = int(min_df)
        self.parts: list[Any] = []

    @property
    def dim(self) -> int:
        return sum(len(p.vocabulary_) for p in self.parts)

    def fit(self, texts: list[str]) -> "NgramVectorizer":
        min_df = self.min_df if len(texts) >= 5 * self.min_df else 1
        word = _vectorizer("word", (1, 2), self.max_features // 2, min_df)
        char = _vectorizer("char_wb", (2, 5), self.max_features - self.max_features // 2, min_df)
        self.parts = []
        for part in (word, char):
            try:
                part.fit(texts)
            except ValueError:  # no n-gram of this kind in the texts (e.g. empty vocabulary)
                continue
            self.parts.append(part)
        if not self.parts:
            raise ValueError("no word or character n-grams in the training texts")
        return self

    def transform(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        indices, weights, offset = [], [], 0
        for part in self.parts:
            row = part.transform([text])  # 1 x V sparse, L2-normalized
            indices.append(row.indices.astype(np.int64) + offset)
            weights.append(row.data.astype(np.float32) / np.sqrt(len(self.parts)))
            offset += len(part.vocabulary_)
        return np.concatenate(indices), np.concatenate(weights)

    def state_dict(self) -> dict[str, Any]:
        return {
            "max_features": self.max_features, "min_df": self.min_df,
            "parts": [
                {
                    "analyzer": p.analyzer, "ngram_range": list(p.ngram_range),
                    "vocabulary": {str(k): int(v) for k, v in p.vocabulary_.items()},
                    "idf": [float(v) for v in p.idf_],
                }
                for p in self.parts
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "NgramVectorizer":
        out = cls(int(state["max_features"]), int(state["min_df"]))
        for entry in state["parts"]:
            part = _vectorizer(entry["analyzer"], tuple(entry["ngram_range"]), out.max_features, 1)
            part.set_params(vocabulary=dict(entry["vocabulary"]))
            part.fit([" ".join(list(entry["vocabulary"])[:1]) or "x"])  # builds the fixed-vocabulary analyzer
            part.idf_ = np.asarray(entry["idf"], dtype=np.float64)
            out.parts.append(part)
        return out
