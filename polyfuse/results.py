"""Rows in, predictions table out, shared by the PyTorch and ONNX predictors (numpy + pandas, no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from polyfuse.row_problems import mark_no_input
from polyfuse.tasks import TASKS


def rows_frame(rows: Any) -> tuple[pd.DataFrame, Path | None]:
    """A DataFrame of ``rows`` (DataFrame, dicts, one dict, or a manifest path) and the manifest's folder."""
    if isinstance(rows, (str, Path)):
        from polyfuse.data.manifest import read_manifest

        path = Path(rows)
        return read_manifest(path), path.parent
    if isinstance(rows, pd.DataFrame):
        return rows.reset_index(drop=True), None
    if isinstance(rows, Mapping):
        return pd.DataFrame([dict(rows)]), None
    return pd.DataFrame(list(rows)), None


def predictions_frame(
    preds: Mapping[str, np.ndarray],
    kept: np.ndarray,
    n_rows: int,
    tasks: Mapping[str, str],
    classes: Mapping[str, Sequence[Any]],
    report: Any,
    decoders: Mapping[str, Callable[[Any], list[Any]]] | None = None,
) -> pd.DataFrame:
    """One chunk of ``Predictor.predict``'s table: ``<task>``, ``<task>:p:<class>`` and ``problems``.

    ``preds[task]`` holds the rows ``kept`` (positions in the chunk, the rows with a usable input);
    other rows get NaN / None and ``problems`` says why.
    """
    part = pd.DataFrame(index=range(n_rows))
    for name, task_type in tasks.items():
        decode = (decoders or {}).get(name)
        for column, cells in TASKS[task_type].result_columns(name, preds[name], kept, n_rows, classes.get(name, []), decode).items():
            part[column] = cells
    problems: dict[int, list[str]] = {}
    for entry in report.entries:
        problems.setdefault(int(entry["row"]), []).append(f"{entry.get('column')}: {entry.get('reason')}")
    # a column read by two inputs (TF-IDF and MiniLM on one text column) reports its problem once
    part["problems"] = mark_no_input(["; ".join(dict.fromkeys(problems.get(i, []))) for i in range(n_rows)], kept)
    return part
