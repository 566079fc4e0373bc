"""Task labels -> training targets (class ids, floats, multi-hot vectors; token ids for generation through
``polyfuse.data.targets``), and choosing a task's encoder. Numpy only."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from polyfuse.config import ConfigError, TaskConfig
from polyfuse.data.processors.base import is_missing
from polyfuse.data.report import STAGE_LABEL, Problem
from polyfuse.data.targets import SPECIALS, TextTargetEncoder

from polyfuse.tasks import TASKS
from polyfuse.tasks.classification import IGNORE_INDEX  # noqa: F401  (re-exported: callers read it here)
from polyfuse.tasks.labels import label_key, normalize_label, sort_key, split_multilabel  # noqa: F401  (re-exported)

#: Task types whose labels a LabelEncoder encodes (generation targets: ``polyfuse.data.targets``).
TASK_TYPES = tuple(name for name, t in TASKS.items() if not t.text_targets)


class LabelEncoder:
    """Encodes one task's label column; the vocabulary is fitted on train (or given as ``classes``).

    What a label means per task type (ids, floats, multi-hot) is the task type's (``polyfuse.tasks``).
    """

    def __init__(self, column: str, type: str = "classification", classes: Sequence[Any] | None = None) -> None:
        if type not in TASK_TYPES:
            raise ConfigError(f"type: {type!r} is not allowed; allowed: {', '.join(TASK_TYPES)}")
        self.column = column
        self.type = type
        self.task = TASKS[type]
        self.fixed = classes is not None
        self.classes: list[Any] = [normalize_label(c) for c in classes] if classes is not None else []
        if len({label_key(c) for c in self.classes}) != len(self.classes):
            raise ConfigError(f"classes: duplicated class names in {list(classes or [])!r}")
        self._ids = {label_key(c): i for i, c in enumerate(self.classes)}

    # ------------------------------------------------------------------ fit
    def fit(self, values: pd.Series | Sequence[Any]) -> "LabelEncoder":
        """Learn the sorted vocabulary from training labels (kept as given when ``classes`` was set)."""
        if not self.task.has_classes or self.fixed:
            return self
        seen: dict[str, Any] = {}
        for value in values:
            if is_missing(value):
                continue
            for label in self.task.label_values(value):
                seen.setdefault(label_key(label), label)
        self.classes = sorted(seen.values(), key=sort_key)
        self._ids = {label_key(c): i for i, c in enumerate(self.classes)}
        return self

    @property
    def dim(self) -> int:
        """Output width of the task's head: classes, or 1 regression target."""
        return self.task.label_dim(self.classes)

    # ------------------------------------------------------------------ encode / decode
    def encode(self, value: Any, task: str | None = None) -> tuple[Any, Problem | None]:
        """One cell -> (target, problem or None). Unusable labels give the ignore value."""
        target, reason, category = self.task.encode_label(value, self._ids, len(self.classes))
        if reason is None:
            return target, None
        return target, Problem(STAGE_LABEL, self.column, reason, category, task)

    def empty(self) -> Any:
        """The target of a row without a label column at all."""
        return self.task.empty_label(len(self.classes))

    def collate(self, targets: list[Any]) -> np.ndarray:
        """[B] int64 class ids, [B] float32 values, or [B, K] float32 multi-hot."""
        return self.task.collate_labels(targets, len(self.classes))

    def decode(self, ids: Sequence[int] | np.ndarray) -> list[Any]:
        """Class ids -> labels (classification; None for -100); multi-hot rows -> label lists (multilabel)."""
        return self.task.decode_labels(self.classes, ids)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"column": self.column, "type": self.type, "classes": self.classes, "fixed": self.fixed}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "LabelEncoder":
        has_classes = state["type"] in TASKS and TASKS[state["type"]].has_classes
        encoder = cls(state["column"], state["type"], state["classes"] if has_classes else None)
        encoder.fixed = bool(state.get("fixed", False))
        return encoder

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        other = LabelEncoder.from_state(state)
        self.__dict__.update(other.__dict__)


def target_options(task: TaskConfig) -> dict[str, Any]:
    """``task.target`` checked against the encoder's options (messages relative to the task's key path)."""
    allowed = ("max_length", "vocab_size", "min_count", "lowercase")
    unknown = [k for k in task.target if k not in allowed]
    if unknown:
        raise ConfigError(f"target.{unknown[0]}: unknown option of generation targets; allowed: {', '.join(allowed)}")
    if not TASKS[task.type].text_targets and task.target:
        raise ConfigError(f"target: only generation tasks have target options (this task is {task.type})")
    return dict(task.target)

def make_encoder(task: TaskConfig) -> LabelEncoder | TextTargetEncoder:
    """The encoder of one task's labels: a LabelEncoder, or a TextTargetEncoder for generation.

    ConfigError messages are relative to the task (``target.max_length: ...``).
    """
    options = target_options(task)
    if not TASKS[task.type].text_targets:
        return LabelEncoder(task.column, task.type, task.classes)
    if task.classes is not None:
        raise ConfigError("classes: generation tasks learn their vocabulary from the training texts; remove it")
    try:
        return TextTargetEncoder(task.column, **options)
    except ConfigError as exc:
        raise ConfigError(f"target.{exc}") from None

def has_vocabulary(encoder: LabelEncoder | TextTargetEncoder) -> bool:
    """False when fitting found no label (no class, or no word beyond the special tokens)."""
    if TASKS[encoder.type].text_targets:
        return encoder.dim > len(SPECIALS)
    return not TASKS[encoder.type].has_classes or bool(encoder.classes)

def encoder_from_state(state: Mapping[str, Any]) -> LabelEncoder | TextTargetEncoder:
    """Rebuild a saved label or text-target encoder."""
    if state.get("type") in TASKS and TASKS[state["type"]].text_targets:
        return TextTargetEncoder.from_state(state)
    return LabelEncoder.from_state(state)
