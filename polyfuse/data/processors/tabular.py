"""Numeric and categorical columns -> ``numeric`` float32 [N'] and ``categorical`` int64 [K]."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from polyfuse.errors import ConfigError
from polyfuse.data.processors.base import Arrays, FitContext, Processor, RowContext, is_missing, positive_int, stack_or_zeros
from polyfuse.registry import PROCESSORS
from polyfuse.types import InputSpec

IMPUTED = "number imputed"
#: Larger magnitudes do not fit float32: such cells are imputed like non-numbers.
LARGEST = float(np.finfo(np.float32).max)
#: Standardized values are clipped to +-CLIP: a z-score beyond it is a data error, and would overflow the model.
CLIP = 1e4


def parse_number(value: Any) -> tuple[float | None, str | None]:
    """(the number, None) or (None, why it is missing) for one cell."""
    if is_missing(value):
        return None, "missing number"
    if isinstance(value, (bool, np.bool_)):
        return float(value), None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None, f"not a number: {value[:80]!r}"
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None, f"not a number: {str(value)[:80]!r}"
    if math.isnan(number):
        return None, "missing number"
    if math.isinf(number):
        return None, "infinite value"
    if abs(number) > LARGEST:
        return None, f"value {number:g} too large (beyond float32)"
    return number, None


def category_key(value: Any) -> str:
    """A cell as its category name: 3, 3.0 and "3" are the same category."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def numeric_column(series: pd.Series) -> np.ndarray:
    """float64 values with NaN for missing, non-numeric, infinite and beyond-float32 cells."""
    values = pd.to_numeric(series, errors="coerce").astype("float64").to_numpy(copy=True)
    with np.errstate(invalid="ignore"):
        values[~np.isfinite(values) | (np.abs(values) > LARGEST)] = np.nan
    return values


@PROCESSORS.register("tabular")
class TabularProcessor(Processor):
    """Numbers and categories of a row.

    Numeric: missing / non-numeric / infinite (or beyond float32) cells are imputed with the
    training median (and recorded in the data report); each column that had missing values in
    training also gets a 0/1 missing-indicator column; values are standardized with the training
    mean/std and clipped to +-CLIP. Categorical: vocabulary of the training values seen at least
    ``min_frequency`` times; id 0 = unknown or missing. A row is missing as a whole only
    when every cell is empty.
    """

    kind = "tabular"

    def __init__(
        self, numeric: list[str] | None = None, categorical: list[str] | None = None, min_frequency: int = 1
    ) -> None:
        super().__init__()
        numeric = list(numeric or [])
        categorical = list(categorical or [])
        for option, names in (("numeric", numeric), ("categorical", categorical)):
            if not all(isinstance(n, str) for n in names):
                raise ConfigError(f"{option}: expected a list of column names, got {names!r}")
        if not numeric and not categorical:
            raise ConfigError("numeric: give at least one numeric or categorical column")
        both = sorted(set(numeric) & set(categorical))
        if both:
            raise ConfigError(f"categorical: {both} are also listed as numeric; list each column once")
        self.options = {"numeric": numeric, "categorical": categorical, "min_frequency": min_frequency}
        self.numeric, self.categorical = numeric, categorical
        self.columns = numeric + categorical
        self.min_frequency = int(positive_int(min_frequency, "min_frequency"))  # type: ignore[arg-type]
        self.median: dict[str, float] = {}
        self.mean: dict[str, float] = {}
        self.std: dict[str, float] = {}
        self.indicators: list[str] = []  # numeric columns with a missing-indicator column
        self.vocab: dict[str, list[str]] = {}
        self._ids: dict[str, dict[str, int]] = {}

    def fit(self, frame: pd.DataFrame, ctx: FitContext) -> None:
        self.indicators = []
        for column in self.numeric:
            values = numeric_column(frame[column])
            finite = values[~np.isnan(values)]
            self.median[column] = float(np.median(finite)) if finite.size else 0.0
            self.mean[column] = float(finite.mean()) if finite.size else 0.0
            std = float(finite.std()) if finite.size else 1.0
            self.std[column] = std if std > 1e-12 else 1.0
            if np.isnan(values).any():
                self.indicators.append(column)
        for column in self.categorical:
            counts: dict[str, int] = {}
            for value in frame[column]:
                if not is_missing(value):
                    key = category_key(value)
                    counts[key] = counts.get(key, 0) + 1
            self.vocab[column] = sorted(k for k, n in counts.items() if n >= self.min_frequency)
        self._index()

    def _index(self) -> None:
        self._ids = {c: {key: i + 1 for i, key in enumerate(keys)} for c, keys in self.vocab.items()}

    def process(self, row: Mapping[str, Any], ctx: RowContext) -> Arrays | None:
        cells = {c: (row.get(c) if hasattr(row, "get") else None) for c in self.columns}
        if all(is_missing(v) for v in cells.values()):
            return None
        numbers = np.zeros(len(self.numeric) + len(self.indicators), dtype=np.float32)
        missing: set[str] = set()
        for i, column in enumerate(self.numeric):
            number, problem = parse_number(cells[column])
            if number is None:
                missing.add(column)
                number = self.median[column]
                ctx.note(column, f"{problem}; imputed with the training median {number:g}", IMPUTED)
            numbers[i] = min(max((number - self.mean[column]) / self.std[column], -CLIP), CLIP)
        for j, column in enumerate(self.indicators):
            numbers[len(self.numeric) + j] = 1.0 if column in missing else 0.0
        categories = np.array(
            [0 if is_missing(cells[c]) else self._ids[c].get(category_key(cells[c]), 0) for c in self.categorical],
            dtype=np.int64,
        )
        return {"numeric": numbers, "categorical": categories}

    def collate(self, items: list[Arrays | None]) -> Arrays:
        return {
            "numeric": stack_or_zeros(items, "numeric", (len(self.numeric) + len(self.indicators),), np.float32),
            "categorical": stack_or_zeros(items, "categorical", (len(self.categorical),), np.int64),
        }

    def feature_names(self) -> list[str]:
        """Names of the ``numeric`` columns of a batch, in order."""
        return self.numeric + [f"{c} (missing)" for c in self.indicators]

    def spec(self, name: str) -> InputSpec:
        return InputSpec(
            name=name, kind="tabular", num_numeric=len(self.numeric) + len(self.indicators),
            cat_cardinalities=[len(self.vocab[c]) + 1 for c in self.categorical],
            extra={"numeric": self.feature_names(), "categorical": list(self.categorical)},
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "median": self.median, "mean": self.mean, "std": self.std,
            "indicators": self.indicators, "vocab": self.vocab,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.median = {k: float(v) for k, v in state["median"].items()}
        self.mean = {k: float(v) for k, v in state["mean"].items()}
        self.std = {k: float(v) for k, v in state["std"].items()}
        self.indicators = list(state["indicators"])
        self.vocab = {k: list(v) for k, v in state["vocab"].items()}
        self._index()
