"""Task labels -> training targets: class ids, floats, or multi-hot vectors. Numpy only."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from polyfuse.config import ConfigError
from polyfuse.data.processors.base import is_missing
from polyfuse.data.report import STAGE_LABEL, Problem

#: Class id of a row without a usable label (ignored by the loss).
IGNORE_INDEX = -100
TASK_TYPES = ("classification", "regression", "multilabel")


def normalize_label(value: Any) -> Any:
    """A label as a plain JSON value: numpy scalars unwrapped, 3.0 -> 3, strings stripped."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return value.strip()
    return value


def label_key(value: Any) -> str:
    """Vocabulary key: 3, 3.0 and "3" name the same class."""
    return str(normalize_label(value))


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, str(value))


def split_multilabel(value: Any) -> list[Any]:
    """A cell of a multilabel column -> its labels: a list/array, a JSON list, or "a|b|c"."""
    if isinstance(value, (list, tuple, np.ndarray, set)):
        return [normalize_label(v) for v in value if not is_missing(v)]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
                if isinstance(items, list):
                    return [normalize_label(v) for v in items if not is_missing(v)]
            except ValueError:
                pass
        return [part.strip() for part in text.split("|") if part.strip()]
    return [normalize_label(value)]


class LabelEncoder:
    """Encodes one task's label column; the vocabulary is fitted on train (or given as ``classes``)."""

    def __init__(self, column: str, type: str = "classification", classes: Sequence[Any] | None = None) -> None:
        if type not in TASK_TYPES:
            raise ConfigError(f"type: {type!r} is not allowed; allowed: {', '.join(TASK_TYPES)}")
        self.column = column
        self.type = type
        self.fixed = classes is not None
        self.classes: list[Any] = [normalize_label(c) for c in classes] if classes is not None else []
        if len({label_key(c) for c in self.classes}) != len(self.classes):
            raise ConfigError(f"classes: duplicated class names in {list(classes or [])!r}")
        self._ids = {label_key(c): i for i, c in enumerate(self.classes)}

    # ------------------------------------------------------------------ fit
    def fit(self, values: pd.Series | Sequence[Any]) -> "LabelEncoder":
        """Learn the sorted vocabulary from training labels (kept as given when ``classes`` was set)."""
        if self.type == "regression" or self.fixed:
            return self
        seen: dict[str, Any] = {}
        for value in values:
            if is_missing(value):
                continue
            labels = split_multilabel(value) if self.type == "multilabel" else [normalize_label(value)]
            for label in labels:
                seen.setdefault(label_key(label), label)
        self.classes = sorted(seen.values(), key=_sort_key)
        self._ids = {label_key(c): i for i, c in enumerate(self.classes)}
        return self

    @property
    def dim(self) -> int:
        """Output width of the task's head: classes, or 1 regression target."""
        return 1 if self.type == "regression" else len(self.classes)

    # ------------------------------------------------------------------ encode / decode
    def encode(self, value: Any, task: str | None = None) -> tuple[Any, Problem | None]:
        """One cell -> (target, problem or None). Unusable labels give the ignore value."""

        def problem(reason: str, category: str) -> Problem:
            return Problem(STAGE_LABEL, self.column, reason, category, task)

        if self.type == "regression":
            if is_missing(value):
                return np.float32(np.nan), problem("missing label", "missing label")
            try:
                number = float(value)
            except (TypeError, ValueError):
                return np.float32(np.nan), problem(f"label is not a number: {str(value)[:80]!r}", "invalid label")
            if not np.isfinite(number):
                return np.float32(np.nan), problem("label is not a finite number", "invalid label")
            return np.float32(number), None
        if self.type == "multilabel":
            if is_missing(value):
                return np.full(len(self.classes), np.nan, np.float32), problem("missing label", "missing label")
            target = np.zeros(len(self.classes), np.float32)
            unseen = []
            for label in split_multilabel(value):
                index = self._ids.get(label_key(label))
                if index is None:
                    unseen.append(label)
                else:
                    target[index] = 1.0
            if unseen:
                return target, problem(f"labels not seen in training: {unseen!r}", "unseen label")
            return target, None
        if is_missing(value):
            return np.int64(IGNORE_INDEX), problem("missing label", "missing label")
        index = self._ids.get(label_key(value))
        if index is None:
            return np.int64(IGNORE_INDEX), problem(f"label {normalize_label(value)!r} not seen in training", "unseen label")
        return np.int64(index), None

    def empty(self) -> Any:
        """The target of a row without a label column at all."""
        if self.type == "classification":
            return np.int64(IGNORE_INDEX)
        if self.type == "regression":
            return np.float32(np.nan)
        return np.full(len(self.classes), np.nan, np.float32)

    def collate(self, targets: list[Any]) -> np.ndarray:
        """[B] int64 class ids, [B] float32 values, or [B, K] float32 multi-hot."""
        if self.type == "classification":
            return np.asarray(targets, dtype=np.int64).reshape(len(targets))
        if self.type == "regression":
            return np.asarray(targets, dtype=np.float32).reshape(len(targets))
        return np.asarray(targets, dtype=np.float32).reshape(len(targets), len(self.classes))

    def decode(self, ids: Sequence[int] | np.ndarray) -> list[Any]:
        """Class ids -> labels (classification; None for -100); multi-hot rows -> label lists (multilabel)."""
        if self.type == "regression":
            return [float(v) for v in np.asarray(ids).reshape(-1)]
        arr = np.asarray(ids)
        if self.type == "multilabel":
            return [[c for c, on in zip(self.classes, row) if on >= 0.5] for row in arr.reshape(-1, len(self.classes))]
        return [None if int(i) == IGNORE_INDEX else self.classes[int(i)] for i in arr.reshape(-1)]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"column": self.column, "type": self.type, "classes": self.classes, "fixed": self.fixed}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "LabelEncoder":
        encoder = cls(state["column"], state["type"], state["classes"] if state["type"] != "regression" else None)
        encoder.fixed = bool(state.get("fixed", False))
        return encoder

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        other = LabelEncoder.from_state(state)
        self.__dict__.update(other.__dict__)
