"""Real rows for deployment checks: a checkpoint's evaluation split (or a manifest), batches, metrics.

Every engine (eager PyTorch, int8 PyTorch, ONNX Runtime fp32 / int8) is scored on the same
numpy batches from ``DataPipeline.batch_from_rows``, so their metrics compare like for like.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import pandas as pd

from polyfuse.errors import DataError

PredictFn = Callable[[Mapping[str, Any]], Mapping[str, np.ndarray]]  # numpy batch -> task -> predictions


@dataclass
class Rows:
    """Raw rows and the folder their file paths resolve against."""

    frame: pd.DataFrame
    root: Path
    source: str
    allow_outside_root: bool = False

    def head(self, n: int) -> "Rows":
        return Rows(self.frame.iloc[:n].reset_index(drop=True), self.root, self.source, self.allow_outside_root)


def manifest_rows(path: str | Path) -> Rows:
    """Rows of a manifest file (CSV/TSV/Parquet/JSONL); paths resolve against its folder."""
    from polyfuse.data.manifest import read_manifest

    path = Path(path)
    frame = read_manifest(path)
    if frame.empty:
        raise DataError("the manifest has no rows", file=str(path))
    return Rows(frame.reset_index(drop=True), path.resolve().parent, str(path))


def split_rows(config: Any, pipeline: Any, split: str = "test") -> Rows:
    """Rows of a run's ``split`` (falling back to valid, then train, when it has none)."""
    from polyfuse.data.prepare import prepare_data

    order = [split] + [s for s in ("test", "valid", "train") if s != split]
    for name in order:  # one split at a time: preparing a split reads all of its rows
        dataset = prepare_data(config, pipeline=pipeline, splits=(name,), progress=False).datasets.get(name)
        if dataset is not None and len(dataset.frame):
            return Rows(
                dataset.frame.reset_index(drop=True), Path(dataset.root), dataset.source or name,
                bool(config.data.allow_outside_root),
            )
    raise DataError(f"the run has no rows in its {split}, valid or train split; pass --data FILE")


def checkpoint_rows(config: Any, pipeline: Any, data: str | Path | None = None, split: str = "test") -> Rows:
    """``data`` (a manifest) when given, else the run's own ``split``."""
    return manifest_rows(data) if data is not None else split_rows(config, pipeline, split)


def with_missing_rows(rows: Rows, pipeline: Any) -> Rows:
    """``rows`` plus, per input, a copy of the first row with that input's cells emptied (modality missing)."""
    if rows.frame.empty:
        return rows
    extra = []
    for name, proc in pipeline.processors.items():
        if len(pipeline.processors) < 2:
            break  # a row with its only input missing says nothing about the fusion
        row = rows.frame.iloc[0].copy()
        for column in proc.columns:
            row[column] = None
        extra.append(row)
    frame = pd.concat([rows.frame, pd.DataFrame(extra)], ignore_index=True) if extra else rows.frame
    return Rows(frame, rows.root, rows.source, rows.allow_outside_root)


def encode(pipeline: Any, rows: Rows, policy: str = "missing") -> tuple[dict[str, Any], Any]:
    """One numpy batch (pipeline layout) of all ``rows`` and its data report."""
    return pipeline.batch_from_rows(
        rows.frame, root=rows.root, policy=policy, allow_outside_root=rows.allow_outside_root, source=rows.source
    )


def batches(pipeline: Any, rows: Rows, batch_size: int) -> Iterator[dict[str, Any]]:
    """Numpy batches of ``batch_size`` rows, in order."""
    for start in range(0, len(rows.frame), batch_size):
        part = Rows(rows.frame.iloc[start : start + batch_size].reset_index(drop=True), rows.root, rows.source, rows.allow_outside_root)
        batch, _ = encode(pipeline, part)
        if len(batch["row"]):
            yield batch


def collect(predict: PredictFn, encoded: list[dict[str, Any]], tasks: Mapping[str, str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Predictions and labels per task, concatenated over ``encoded`` batches."""
    preds: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    labels: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    for batch in encoded:
        out = predict(batch)
        for task in tasks:
            preds[task].append(np.asarray(out[task]))
            labels[task].append(np.asarray(batch["labels"][task]))
    return (
        {t: np.concatenate(v) for t, v in preds.items() if v},
        {t: np.concatenate(v) for t, v in labels.items() if v},
    )


def score(predict: PredictFn, encoded: list[dict[str, Any]], tasks: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """Task metrics (as ``polyfuse eval`` computes them) of ``predict`` over ``encoded`` batches."""
    import torch

    from polyfuse.evaluate.metrics import summarize

    preds, labels = collect(predict, encoded, tasks)
    return summarize(
        dict(tasks),
        {t: torch.from_numpy(np.ascontiguousarray(v)) for t, v in preds.items()},
        {t: torch.from_numpy(np.ascontiguousarray(v)) for t, v in labels.items()},
    )


def main_metric(metrics: Mapping[str, Mapping[str, float]], tasks: Mapping[str, str]) -> tuple[str, float] | None:
    """(``task/metric``, value) of the first task's main metric (acc, mae or f1), when known."""
    from polyfuse.tasks import TASKS

    for task, task_type in tasks.items():
        name = TASKS[task_type].main_metric[0]
        if name in metrics.get(task, {}):
            return f"{task}/{name}", float(metrics[task][name])
    return None


def torch_predict_fn(model: Any, tasks: Mapping[str, str]) -> PredictFn:
    """A numpy-batch -> numpy-predictions function for a torch MultimodalModel (eval mode, no grad)."""
    import torch

    from polyfuse.data.collate import to_torch
    from polyfuse.tasks import TASKS

    model.eval()

    def predict(batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        tb = to_torch({"inputs": batch["inputs"], "present": batch["present"]})
        with torch.inference_mode():
            out = model(tb["inputs"], tb["present"])
        return {name: TASKS[kind].predictions(out.outputs[name]).numpy() for name, kind in tasks.items()}

    return predict
