"""The shard format: a manifest's rows as webdataset tar files, with the fitted pipeline beside them.

``polyfuse data shard MANIFEST --out DIR`` (``polyfuse.data.shard_writer``) writes::

    DIR/shards.json           index: splits -> shard files and their row counts, file columns, source
    DIR/config.yaml           the resolved config (data.inputs, tasks) the pipeline was fitted for
    DIR/pipeline/             the fitted DataPipeline (vocabularies, normalisation), fitted on train only
    DIR/labels.npz            encoded training labels per scalar task (class weights, target scaling)
    DIR/data_report.json/.md  the rows with problems, found while sharding (same entries as a training run's)
    DIR/<split>-000000.tar    webdataset shards: per row ``<key>.json`` (row number, non-file cells) and
                              ``<key>.f<i><suffix>`` (the raw bytes of file column i)

Shards hold raw file bytes, not decoded arrays: decoding stays in the pipeline, so a change of
preprocessing needs no re-sharding (only a refit of ``pipeline/``). Every row is decoded once
while sharding (in ``workers`` processes, one shard per task) so that problems are found and
recorded up front; ``missing: skip`` rows are left out of the shards, ``error`` stops at the first.
Training rows are written in a seeded random order, so a shuffle buffer over consecutive rows
mixes the whole table.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from polyfuse.data.processors.base import RowContext
from polyfuse.errors import DataError

FORMAT = "polyfuse-shards"
VERSION = 1
INDEX = "shards.json"
LABELS = "labels.npz"
SCHEME = "shards://"
FILE_KINDS: tuple[str, ...] = ("image", "audio", "sequence", "video")  # input kinds whose cells name files


def is_shards(location: str | None) -> bool:
    """True for ``shards://DIR`` (a shard directory written by ``polyfuse data shard``)."""
    return bool(location) and str(location).startswith(SCHEME)


def shard_dir(location: str) -> Path:
    """The directory of ``shards://DIR``; DataError when it holds no shard index."""
    directory = Path(str(location)[len(SCHEME):]).expanduser()
    if not (directory / INDEX).is_file():
        raise DataError(f"not a shard directory (no {INDEX}); write one with `polyfuse data shard`", file=str(directory))
    return directory


@dataclass
class ShardIndex:
    """What ``shards.json`` holds: per split, the shard files (relative to the directory) and their rows."""

    directory: Path
    splits: dict[str, list[dict[str, Any]]]  # split -> [{"file": name, "rows": n}]
    file_columns: list[str]
    source: str

    def rows(self, split: str) -> int:
        return sum(int(s["rows"]) for s in self.splits.get(split, []))

    def urls(self, split: str) -> list[str]:
        return [str(self.directory / s["file"]) for s in self.splits.get(split, [])]

    def counts(self, split: str) -> list[int]:
        return [int(s["rows"]) for s in self.splits.get(split, [])]

    @classmethod
    def load(cls, directory: str | Path) -> "ShardIndex":
        directory = Path(directory)
        path = directory / INDEX
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"unreadable shard index ({exc})", file=str(path)) from None
        if state.get("format") != FORMAT:
            raise DataError("not a polyfuse shard index", file=str(path))
        if int(state.get("version", 0)) > VERSION:
            raise DataError(f"shard format version {state.get('version')} is newer than this polyfuse reads ({VERSION})", file=str(path))
        return cls(directory, {k: list(v["shards"]) for k, v in state["splits"].items()}, list(state["file_columns"]), str(state["source"]))


# ------------------------------------------------------------------ one row <-> one sample


def row_sample(record: dict[str, Any], row: int, file_columns: Sequence[str], ctx: RowContext) -> dict[str, Any]:
    """The webdataset sample of one manifest row: JSON of the cells, raw bytes of each file it names.

    A file that cannot be read is stored as an empty cell (its problem is in the data report).
    """
    from polyfuse.data.paths import resolve_path

    cells: dict[str, Any] = {}
    sample: dict[str, Any] = {"__key__": f"{row:010d}"}
    for column, value in record.items():
        if column in file_columns:
            index = file_columns.index(column)
            if isinstance(value, str) and value.strip():
                try:
                    path = resolve_path(value, ctx.root, allow_outside_root=ctx.allow_outside_root)
                    sample[f"f{index}{path.suffix.lower()}"] = path.read_bytes()
                except (DataError, OSError):
                    pass
            cells[column] = None
        else:
            cells[column] = _json_cell(value)
    sample["json"] = json.dumps({"row": int(row), "cells": cells}, ensure_ascii=False, allow_nan=False).encode("utf-8")
    return sample


def sample_record(sample: dict[str, Any], file_columns: Sequence[str]) -> tuple[int, dict[str, Any]]:
    """(row number, manifest-like record) of a sample read back: file cells hold the file's bytes (or None)."""
    meta = json.loads(sample["json"])
    record = dict(meta["cells"])
    files = {key.split(".", 1)[0]: value for key, value in sample.items() if key.startswith("f") and not key.startswith("__")}
    for index, column in enumerate(file_columns):
        record[column] = files.get(f"f{index}")
    return int(meta["row"]), record


def _json_cell(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


__all__ = ["ShardIndex", "is_shards", "shard_dir", "row_sample", "sample_record", "SCHEME", "FILE_KINDS"]
