"""Label values as the task types read them: normalized JSON values, vocabulary keys, multilabel cells."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from polyfuse.cells import is_missing


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


def sort_key(value: Any) -> tuple[int, Any]:
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
