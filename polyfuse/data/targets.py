"""Text targets of generation tasks (captions, generated answers) -> token ids. Numpy only.

A word-level vocabulary fitted on the training split: one token per word (``\\w+``, with
an apostrophe inside a word kept: "don't") or punctuation mark. The first four ids are
fixed, so that heads, search and metrics need no vocabulary to know them::

    0 <pad>   1 <unk>   2 <s> (BOS)   3 </s> (EOS)

A target is ``[BOS, w_1 .. w_n, EOS]`` (at most ``max_length`` ids, words cut first);
a batch is ``[B, L]`` int64 padded with PAD, and a row without a target is all PAD.
One token per word also makes BLEU over token ids equal to BLEU over the words.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from polyfuse.config import ConfigError
from polyfuse.data.processors.base import is_missing
from polyfuse.data.report import STAGE_LABEL, Problem
from polyfuse.tasks.tokens import (  # noqa: F401  (the text-target ids are read from here too)
    BOS_ID, DEFAULT_MAX_LENGTH, EOS_ID, PAD_ID, SPECIALS, UNK_ID, strip_special, target_max_length,
)

GENERATION = "generation"

_WORDS = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
_SPACE_BEFORE = re.compile(r" (?=[.,!?;:%)\]}])")
_SPACE_AFTER = re.compile(r"(?<=[(\[{]) ")


class TextTargetEncoder:
    """Encodes one generation task's text column into token ids; the vocabulary is fitted on train.

    ``vocab_size`` caps the vocabulary (specials included; most frequent words kept, ties
    alphabetical), ``min_count`` drops rarer words (they become ``<unk>``), ``lowercase``
    folds case before counting.
    """

    type = GENERATION

    def __init__(
        self,
        column: str,
        max_length: int = DEFAULT_MAX_LENGTH,
        vocab_size: int | None = None,
        min_count: int = 1,
        lowercase: bool = True,
    ) -> None:
        for option, value, least in (("max_length", max_length, 3), ("min_count", min_count, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(f"{option}: expected an integer >= {least}, got {value!r}")
        if vocab_size is not None and (not isinstance(vocab_size, int) or vocab_size <= len(SPECIALS)):
            raise ConfigError(f"vocab_size: expected an integer > {len(SPECIALS)} or null, got {vocab_size!r}")
        self.column = column
        self.max_length = max_length
        self.vocab_size = vocab_size
        self.min_count = min_count
        self.lowercase = bool(lowercase)
        self.classes: list[str] = list(SPECIALS)  # the vocabulary: id -> token
        self._ids: dict[str, int] = {t: i for i, t in enumerate(self.classes)}

    # ------------------------------------------------------------------ text <-> words
    def words(self, text: str) -> list[str]:
        """The tokens of one text, in order."""
        return _WORDS.findall(text.lower() if self.lowercase else text)

    @staticmethod
    def join(words: Sequence[str]) -> str:
        """Words -> text: single spaces, none before closing punctuation or after opening brackets."""
        return _SPACE_AFTER.sub("", _SPACE_BEFORE.sub("", " ".join(words)))

    # ------------------------------------------------------------------ fit
    def fit(self, values: pd.Series | Sequence[Any]) -> "TextTargetEncoder":
        """Learn the vocabulary from the training texts (specials first, then by frequency)."""
        counts: Counter[str] = Counter()
        for value in values:
            if not is_missing(value):
                counts.update(self.words(str(value)))
        ranked = sorted((w for w, n in counts.items() if n >= self.min_count and w not in SPECIALS),
                        key=lambda w: (-counts[w], w))
        if self.vocab_size is not None:
            ranked = ranked[: self.vocab_size - len(SPECIALS)]
        self.classes = list(SPECIALS) + ranked
        self._ids = {t: i for i, t in enumerate(self.classes)}
        return self

    @property
    def dim(self) -> int:
        """Output width of the decoder: the vocabulary size."""
        return len(self.classes)

    # ------------------------------------------------------------------ encode / decode
    def encode(self, value: Any, task: str | None = None) -> tuple[np.ndarray, Problem | None]:
        """One cell -> (ids int64 [n+2] = BOS, words, EOS; problem or None). Missing text gives no ids."""
        if is_missing(value):
            return self.empty(), Problem(STAGE_LABEL, self.column, "missing label", "missing label", task)
        words = self.words(str(value))
        if not words:
            return self.empty(), Problem(STAGE_LABEL, self.column, "the target text has no words", "invalid label", task)
        ids = [self._ids.get(w, UNK_ID) for w in words[: self.max_length - 2]]
        return np.asarray([BOS_ID, *ids, EOS_ID], dtype=np.int64), None

    def empty(self) -> np.ndarray:
        """The target of a row without one (becomes all PAD in a batch)."""
        return np.zeros(0, dtype=np.int64)

    def collate(self, targets: list[np.ndarray]) -> np.ndarray:
        """[B, L] int64 padded with PAD (L = the longest target of the batch, at least 2)."""
        width = max([len(t) for t in targets] + [2])
        out = np.full((len(targets), width), PAD_ID, dtype=np.int64)
        for i, ids in enumerate(targets):
            out[i, : len(ids)] = ids
        return out

    def decode(self, ids: Sequence[Sequence[int]] | np.ndarray) -> list[str]:
        """Rows of ids (with or without BOS; cut at the first EOS; PAD dropped) -> texts."""
        return [self.join([self.classes[i] for i in strip_special(row)]) for row in ids]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "column": self.column, "type": GENERATION, "classes": list(self.classes), "max_length": self.max_length,
            "vocab_size": self.vocab_size, "min_count": self.min_count, "lowercase": self.lowercase,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "TextTargetEncoder":
        encoder = cls(
            state["column"], int(state["max_length"]), state.get("vocab_size"), int(state.get("min_count", 1)),
            bool(state.get("lowercase", True)),
        )
        classes = list(state["classes"])
        if tuple(classes[: len(SPECIALS)]) != SPECIALS:
            raise ConfigError(f"target vocabulary of {state['column']!r} does not start with {SPECIALS}")
        encoder.classes = classes
        encoder._ids = {t: i for i, t in enumerate(classes)}
        return encoder

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.__dict__.update(TextTargetEncoder.from_state(state).__dict__)
