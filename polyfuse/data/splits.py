"""Seeded train / valid / test splits of one table: stratified by a label, group-aware.

Rows (or whole groups, with ``group``) are ordered so that every prefix holds each class
in proportion: within a class the units are shuffled and spread evenly over [0, 1), and
one unit of every class is put first. Train is the first part of that order, valid the
next, test the last, cut at the unit boundaries closest to the requested row counts. So
every class is in train, rare classes reach valid/test when they have rows to spare, and
a group never straddles two splits.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from polyfuse.errors import DataError

SPLITS = ("train", "valid", "test")
#: A numeric stratification column with more distinct values than this is binned by quantiles.
MAX_STRATA_NUMERIC = 20
QUANTILE_BINS = 10


def split_frame(
    df: pd.DataFrame,
    *,
    valid: float,
    test: float,
    seed: int,
    stratify: str | None = None,
    group: str | None = None,
) -> dict[str, np.ndarray]:
    """``{"train": idx, "valid": idx, "test": idx}``: sorted int64 row positions (a split is empty when its fraction is 0).

    Deterministic for a seed. ``stratify`` names a label column (missing labels form their
    own class); ``group`` names a column whose rows always share a split (rows with an
    empty group value are their own group).
    """
    _check_fraction("valid", valid)
    _check_fraction("test", test)
    if valid + test >= 1.0:
        raise DataError(f"data.split: valid + test = {valid + test:g} leaves no training rows; it must be below 1")
    n = len(df)
    if n == 0:
        raise DataError("cannot split an empty table")
    for option, column in (("stratify", stratify), ("group", group)):
        if column is not None and column not in df.columns:
            present = ", ".join(repr(str(c)) for c in df.columns)
            raise DataError(f"data.split.{option}: no column {column!r}; columns present: {present}")

    wanted = {"valid": _target(valid, n), "test": _target(test, n)}
    wanted["train"] = n - wanted["valid"] - wanted["test"]
    needed = 1 + (valid > 0) + (test > 0)
    if wanted["train"] < 1 or n < needed:
        raise DataError(f"table too small to split: {n} row{'s' if n != 1 else ''} for {needed} non-empty splits "
                        f"(valid={valid:g}, test={test:g})")

    units, sizes = _units(df, group)  # unit id per row, rows per unit
    strata = _strata(df, stratify, units, len(sizes))  # stratum id per unit
    order = _stratified_order(strata, np.random.default_rng(seed))
    forced = len(np.unique(strata))  # the first unit of each class goes to train
    cuts = _cut_points(sizes[order], wanted, forced, valid > 0, test > 0, group)

    assignment = np.empty(len(sizes), dtype=np.int64)
    assignment[order[: cuts[0]]] = 0
    assignment[order[cuts[0] : cuts[1]]] = 1
    assignment[order[cuts[1] :]] = 2
    per_row = assignment[units]
    return {name: np.flatnonzero(per_row == i).astype(np.int64) for i, name in enumerate(SPLITS)}


def _check_fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value < 1:
        raise DataError(f"data.split.{name}: expected a fraction in [0, 1), got {value!r}")


def _target(fraction: float, n: int) -> int:
    """Rows wanted for a split: rounded, at least one when the fraction is positive."""
    return 0 if fraction <= 0 else max(1, int(round(fraction * n)))


def _units(df: pd.DataFrame, group: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Unit index per row (groups, or one unit per row) and the row count of each unit."""
    n = len(df)
    if group is None:
        return np.arange(n), np.ones(n, dtype=np.int64)
    keys = df[group].map(_key)
    blank = df[group].isna() | keys.map(lambda k: isinstance(k, str) and not k.strip())
    keys = keys.where(~blank, pd.Series([("\x00row", i) for i in range(n)], index=df.index, dtype=object))
    codes, _ = pd.factorize(keys, sort=False)
    return codes.astype(np.int64), np.bincount(codes).astype(np.int64)


def _strata(df: pd.DataFrame, stratify: str | None, units: np.ndarray, n_units: int) -> np.ndarray:
    """Stratum id per unit: the class of the unit's rows (the most common one for a group)."""
    if stratify is None:
        return np.zeros(n_units, dtype=np.int64)
    column = df[stratify]
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column) and column.nunique() > MAX_STRATA_NUMERIC:
        column = pd.qcut(column, QUANTILE_BINS, labels=False, duplicates="drop")
    labels = column.map(_key).where(column.notna(), "\x00missing")
    codes, _ = pd.factorize(labels.astype(str), sort=True)
    if n_units == len(df):
        return codes.astype(np.int64)
    frame = pd.DataFrame({"unit": units, "label": codes})
    # most common class per unit; ties -> the smallest class id (deterministic)
    counts = frame.groupby(["unit", "label"]).size().reset_index(name="n")
    counts = counts.sort_values(["unit", "n", "label"], ascending=[True, False, True])
    return counts.drop_duplicates("unit").set_index("unit")["label"].reindex(range(n_units)).to_numpy(np.int64)


def _stratified_order(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Units ordered so that each class spreads evenly; one unit per class first."""
    keys = np.empty(len(strata), dtype=np.float64)
    for stratum in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == stratum))
        keys[members[0]] = -1.0  # one unit of every class lands in train
        rest = members[1:]
        if len(rest):
            offset = rng.random()
            keys[rest] = (np.arange(len(rest)) + offset) / len(rest)
    tie_break = rng.random(len(strata))
    return np.lexsort((tie_break, keys))


def _cut_points(
    sizes: np.ndarray, wanted: dict[str, int], forced: int, need_valid: bool, need_test: bool, group: str | None
) -> tuple[int, int]:
    """Unit positions ending train and valid, closest to the wanted row counts."""
    n_units = len(sizes)
    tail_units = int(need_valid) + int(need_test)
    if n_units < 1 + tail_units:
        what = f"groups in column {group!r}" if group else "rows"
        raise DataError(f"too few {what} to split: {n_units}, need at least {1 + tail_units}")
    cumulative = np.concatenate([[0], np.cumsum(sizes)])  # rows in the first k units
    if tail_units == 0:
        return n_units, n_units
    lowest = min(max(1, forced), n_units - tail_units)  # every class in train when there are rows to spare
    first = _closest(cumulative, wanted["train"], lowest, n_units - tail_units)
    if not need_valid:
        return first, first
    if not need_test:
        return first, n_units
    return first, _closest(cumulative, wanted["train"] + wanted["valid"], first + 1, n_units - 1)


def _closest(cumulative: np.ndarray, target: int, low: int, high: int) -> int:
    """k in [low, high] whose cumulative row count is closest to ``target`` (smallest k on ties)."""
    candidates = np.arange(low, high + 1)
    return int(candidates[np.argmin(np.abs(cumulative[candidates] - target))])


def _key(value: Any) -> Any:
    try:
        hash(value)
        return value
    except TypeError:
        return repr(value)
