"""Seeded, stratified, group-aware train/valid/test splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyfuse.data.splits import split_frame
from polyfuse.errors import DataError


def _imbalanced(n: int = 1000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "label": rng.choice(["common", "mid", "rare"], p=[0.8, 0.15, 0.05], size=n),
            "speaker": rng.integers(0, 80, size=n),
        }
    )


def _check_partition(splits: dict[str, np.ndarray], n: int) -> None:
    assert set(splits) == {"train", "valid", "test"}
    joined = np.concatenate(list(splits.values()))
    assert np.array_equal(np.sort(joined), np.arange(n))  # disjoint and complete
    for idx in splits.values():
        assert idx.dtype == np.int64 and np.array_equal(idx, np.sort(idx))


def test_sizes_and_determinism() -> None:
    frame = _imbalanced()
    first = split_frame(frame, valid=0.1, test=0.2, seed=3)
    _check_partition(first, len(frame))
    assert {k: len(v) for k, v in first.items()} == {"train": 700, "valid": 100, "test": 200}
    again = split_frame(frame, valid=0.1, test=0.2, seed=3)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    other = split_frame(frame, valid=0.1, test=0.2, seed=4)
    assert not np.array_equal(first["test"], other["test"])


def test_stratified_keeps_class_shares() -> None:
    frame = _imbalanced()
    splits = split_frame(frame, valid=0.1, test=0.2, seed=0, stratify="label")
    _check_partition(splits, len(frame))
    overall = frame["label"].value_counts(normalize=True)
    for idx in splits.values():
        shares = frame["label"].iloc[idx].value_counts(normalize=True)
        for cls in overall.index:
            assert abs(shares.get(cls, 0.0) - overall[cls]) < 0.01


def test_every_class_in_train_even_when_tiny() -> None:
    frame = pd.DataFrame({"label": ["a"] * 6 + ["b"] * 2 + ["c", "d"]})
    for seed in range(20):
        splits = split_frame(frame, valid=0.2, test=0.2, seed=seed, stratify="label")
        _check_partition(splits, len(frame))
        assert set(frame["label"].iloc[splits["train"]]) == {"a", "b", "c", "d"}
        assert len(splits["valid"]) >= 1 and len(splits["test"]) >= 1


def test_groups_never_straddle_splits() -> None:
    frame = _imbalanced()
    for stratify in (None, "label"):
        splits = split_frame(frame, valid=0.15, test=0.15, seed=1, stratify=stratify, group="speaker")
        _check_partition(splits, len(frame))
        groups = {k: set(frame["speaker"].iloc[v]) for k, v in splits.items()}
        assert not groups["train"] & groups["valid"] and not groups["train"] & groups["test"]
        assert not groups["valid"] & groups["test"]
        assert abs(len(splits["test"]) - 150) <= 25  # cut at the group boundary closest to 15%


def test_group_split_with_stratification_tracks_group_classes() -> None:
    # each speaker says one class; 30 speakers of "x", 10 of "y"
    rows = [{"speaker": s, "label": "x" if s < 30 else "y"} for s in range(40) for _ in range(5)]
    frame = pd.DataFrame(rows)
    splits = split_frame(frame, valid=0.0, test=0.25, seed=0, stratify="label", group="speaker")
    test_labels = frame["label"].iloc[splits["test"]].value_counts()
    assert len(splits["valid"]) == 0
    assert test_labels.sum() == 50 and test_labels["y"] in (10, 15)  # 12.5 wanted, groups hold 5 rows
    assert {"x", "y"} <= set(frame["label"].iloc[splits["train"]])


def test_missing_labels_and_groups_are_handled() -> None:
    frame = pd.DataFrame({"label": ["a", None, "b", "a", None, "b", "a", "b"], "g": ["p", None, "p", "q", "r", None, "s", "s"]})
    splits = split_frame(frame, valid=0.25, test=0.25, seed=0, stratify="label", group="g")
    _check_partition(splits, len(frame))
    where = {int(i): k for k, idx in splits.items() for i in idx}
    assert where[0] == where[2] and where[6] == where[7]  # groups p and s together


def test_zero_fractions_give_empty_splits() -> None:
    frame = pd.DataFrame({"x": range(10)})
    splits = split_frame(frame, valid=0.0, test=0.0, seed=0)
    assert len(splits["train"]) == 10 and len(splits["valid"]) == 0 and len(splits["test"]) == 0
    splits = split_frame(frame, valid=0.0, test=0.3, seed=0)
    assert [len(splits[k]) for k in ("train", "valid", "test")] == [7, 0, 3]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"valid": -0.1, "test": 0.1}, r"data.split.valid: expected a fraction in \[0, 1\), got -0.1"),
        ({"valid": 0.1, "test": 1.0}, r"data.split.test: expected a fraction"),
        ({"valid": float("nan"), "test": 0.1}, r"data.split.valid: expected a fraction"),
        ({"valid": 0.5, "test": 0.5}, r"valid \+ test = 1 leaves no training rows"),
        ({"valid": 0.1, "test": 0.1, "stratify": "nope"}, r"data.split.stratify: no column 'nope'"),
        ({"valid": 0.1, "test": 0.1, "group": "nope"}, r"data.split.group: no column 'nope'"),
    ],
)
def test_invalid_options(kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        split_frame(pd.DataFrame({"x": range(10)}), seed=0, **kwargs)


def test_too_small_tables() -> None:
    with pytest.raises(DataError, match="table too small to split: 2 rows for 3 non-empty splits"):
        split_frame(pd.DataFrame({"x": [1, 2]}), valid=0.1, test=0.1, seed=0)
    with pytest.raises(DataError, match="empty table"):
        split_frame(pd.DataFrame({"x": []}), valid=0.1, test=0.1, seed=0)
    frame = pd.DataFrame({"x": range(10), "g": [0] * 5 + [1] * 5})
    with pytest.raises(DataError, match="too few groups in column 'g' to split: 2, need at least 3"):
        split_frame(frame, valid=0.1, test=0.1, seed=0, group="g")


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(3, 60),
    classes=st.integers(1, 5),
    groups=st.integers(3, 30),
    valid=st.sampled_from([0.0, 0.1, 0.3]),
    test=st.sampled_from([0.0, 0.15, 0.3]),
    seed=st.integers(0, 1000),
    use_group=st.booleans(),
)
def test_partition_property(n: int, classes: int, groups: int, valid: float, test: float, seed: int, use_group: bool) -> None:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"y": rng.integers(0, classes, n), "g": rng.integers(0, groups, n)})
    try:
        splits = split_frame(frame, valid=valid, test=test, seed=seed, stratify="y", group="g" if use_group else None)
    except DataError as exc:
        assert "too" in str(exc)  # only "too small" / "too few groups" are acceptable refusals
        return
    _check_partition(splits, n)
    assert len(splits["train"]) > 0
    assert (len(splits["valid"]) > 0) == (valid > 0) and (len(splits["test"]) > 0) == (test > 0)
    if use_group:
        owner = {}
        for name, idx in splits.items():
            for g in frame["g"].iloc[idx]:
                assert owner.setdefault(g, name) == name
