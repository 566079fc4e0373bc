"""Predict with an exported model: ONNX Runtime + numpy + the torch-free data pipeline. Never imports torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from polyfuse.errors import CheckpointError
from polyfuse.results import predictions_frame, rows_frame
from polyfuse.row_problems import usable_rows, warn_about_problems
from polyfuse.tasks import TASKS

META_FILE = "onnx_model.json"  # same names as polyfuse.deploy.export (which imports torch)
FORMAT = "polyfuse-onnx"


class OnnxPredictor:
    """``OnnxPredictor(dir)`` on a folder written by ``polyfuse export``; ``.predict(rows)`` like ``Predictor``."""

    def __init__(self, path: str | Path, *, threads: int | None = None, onnx_file: str | None = None) -> None:
        import onnxruntime as ort

        from polyfuse.data.pipeline import DataPipeline

        self.path = Path(path)
        meta_path = self.path / META_FILE
        if not meta_path.is_file():
            raise CheckpointError(f"{self.path}: no {META_FILE}; export a checkpoint with `polyfuse export CKPT --out DIR`")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        except ValueError as exc:
            raise CheckpointError(f"{meta_path}: not valid JSON ({exc})") from None
        if self.meta.get("format") != FORMAT:
            raise CheckpointError(f"{meta_path}: not a polyfuse ONNX export")
        model_path = self.path / (onnx_file or self.meta["onnx"])
        if not model_path.is_file():
            raise CheckpointError(f"{self.path}: {model_path.name} is missing")
        self.pipeline = DataPipeline.load(self.path / "pipeline")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.model_file = model_path
        self.tasks: dict[str, str] = {t: d["type"] for t, d in self.meta["tasks"].items()}
        self._classes = {t: (self.pipeline.classes(t) if TASKS[kind].has_classes else []) for t, kind in self.tasks.items()}
        self.inputs: dict[str, str] = dict(self.meta["input_kinds"])
        self._dtypes = {i.name: _NUMPY.get(i.type, np.float32) for i in self.session.get_inputs()}
        metrics_path = self.path / "metrics.json"
        self.metrics: dict[str, Any] = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}

    @classmethod
    def load(cls, path: str | Path) -> "OnnxPredictor":
        return cls(path)

    def classes(self, task: str) -> list[Any]:
        return list(self._classes[task])

    def feed(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """A numpy batch (pipeline layout) -> the graph's inputs, in their dtypes."""
        feed = {}
        for name, dtype in self._dtypes.items():
            inp, _, key = name.rpartition(".")
            array = batch["present"][inp] if key == "present" else batch["inputs"][inp][key]
            feed[name] = np.ascontiguousarray(array, dtype=dtype)
        return feed

    def predict_batch(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Numpy batch (pipeline layout) -> probabilities / values per task."""
        names = list(self.tasks)
        return dict(zip(names, self.session.run(names, self.feed(batch))))

    def predict(
        self,
        rows: pd.DataFrame | Sequence[Mapping[str, Any]] | Mapping[str, Any] | str | Path,
        *,
        root: str | Path | None = None,
        batch_size: int = 256,
        policy: str = "missing",
    ) -> pd.DataFrame:
        """Same columns and rows as ``polyfuse.predictor.Predictor.predict``."""
        frame, default_root = rows_frame(rows)
        root_path = Path(root) if root is not None else (default_root or Path.cwd())
        parts = []
        for start in range(0, len(frame), batch_size):
            chunk = frame.iloc[start : start + batch_size].reset_index(drop=True)
            batch, report = self.pipeline.batch_from_rows(chunk, root=root_path, policy=policy)
            kept = np.asarray(batch["row"], dtype=np.int64)
            preds = self.predict_batch(batch) if len(kept) else {t: np.zeros((0, max(1, len(self._classes[t])))) for t in self.tasks}
            usable = usable_rows(batch, self.inputs)  # a row with no usable input gets no prediction
            preds = {t: np.asarray(v)[usable] for t, v in preds.items()}
            part = predictions_frame(preds, kept[usable], len(chunk), self.tasks, self._classes, report)
            part.index = range(start, start + len(chunk))
            parts.append(part)
        result = pd.concat(parts) if parts else pd.DataFrame()
        warn_about_problems(result, root_path)
        return result

    def __repr__(self) -> str:
        return f"OnnxPredictor({str(self.path)!r}, inputs={self.inputs}, tasks={self.tasks})"


_NUMPY = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_, "tensor(double)": np.float64, "tensor(int32)": np.int32}
