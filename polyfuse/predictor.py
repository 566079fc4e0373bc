"""A trained model loaded from its checkpoint directory, ready to predict on raw rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from polyfuse.checkpoint import LoadedCheckpoint, load_model_dir
from polyfuse.results import predictions_frame, rows_frame
from polyfuse.row_problems import usable_rows, warn_about_problems
from polyfuse.tasks import TASKS


class Predictor:
    """``polyfuse.load(path)``: the model, its config and its fitted preprocessing."""

    def __init__(self, loaded: LoadedCheckpoint) -> None:
        self.path = loaded.path
        self.config = loaded.config
        self.model = loaded.model
        self.pipeline = loaded.pipeline
        self.specs = loaded.specs
        self.task_dims = loaded.task_dims
        self.metrics = loaded.metrics

    @classmethod
    def load(cls, path: str | Path) -> "Predictor":
        return cls(load_model_dir(path))

    @property
    def tasks(self) -> dict[str, Any]:
        return dict(self.config.tasks)

    @property
    def inputs(self) -> dict[str, str]:
        """Input name -> kind."""
        return {name: spec.kind for name, spec in self.specs.items()}

    def classes(self, task: str) -> list[Any]:
        return list(self.pipeline.classes(task))

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def _forward(self, batch: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """Numpy batch -> (predictions per task, the fusion's weight per input [B] or None)."""
        from polyfuse.data.collate import to_torch

        tb = to_torch(batch)
        out = self.model(tb["inputs"], tb["present"])
        preds = {name: TASKS[task.type].predictions(out.outputs[name]).numpy() for name, task in self.config.tasks.items()}
        weights = out.fused.modality_weights
        if weights is None or not out.fused.modalities:
            return preds, None
        w = weights.float().numpy()  # [B, M]
        return preds, {m: w[:, j] for j, m in enumerate(out.fused.modalities)}

    def predict_batch(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Numpy batch (pipeline layout) -> probabilities / values per task."""
        return self._forward(batch)[0]

    def explain_batch(self, batch: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]], dict[str, np.ndarray] | None]:
        """Numpy batch -> (predictions, ``{task: {input: [B] contribution}}``, fusion weights per input or None).

        One extra batched pass per input (see :mod:`polyfuse.explain`).
        """
        from polyfuse.explain import explain_batch

        preds, weights = self._forward(batch)
        tasks = {name: task.type for name, task in self.config.tasks.items()}
        return preds, explain_batch(self.predict_batch, batch, tasks, list(self.specs), base=preds), weights

    def predict(
        self,
        rows: pd.DataFrame | Sequence[Mapping[str, Any]] | Mapping[str, Any] | str | Path,
        *,
        root: str | Path | None = None,
        batch_size: int = 256,
        policy: str = "missing",
        explain: bool = False,
    ) -> pd.DataFrame:
        """Predict rows (DataFrame, dicts, or a manifest path). One output row per input row.

        Columns: ``<task>`` (predicted label, value, or generated text) and ``<task>:p:<class>``
        (probabilities; not for regression and generation),
        plus ``problems`` listing anything unreadable in that row (treated as missing).
        ``explain``: also ``<task>:explain:<input>`` (how much the input moved the row's prediction:
        see :mod:`polyfuse.explain`) and, for fusions that weigh inputs, ``fusion_weight:<input>``.
        """
        from polyfuse.explain import column_name, weight_column

        frame, default_root = rows_frame(rows)
        root_path = Path(root) if root is not None else (default_root or Path.cwd())
        outputs: list[pd.DataFrame] = []
        for start in range(0, len(frame), batch_size):
            chunk = frame.iloc[start : start + batch_size].reset_index(drop=True)
            batch, report = self.pipeline.batch_from_rows(chunk, root=root_path, policy=policy)
            if explain:
                preds, contributions, weights = self.explain_batch(batch)
            else:
                preds, contributions, weights = self.predict_batch(batch), {}, None
            rows_idx = np.asarray(batch["row"])
            # a row with no usable input gets no prediction: a label from nothing would look real
            usable = usable_rows(batch, self.specs)
            kept = rows_idx[usable]
            tasks = {name: task.type for name, task in self.config.tasks.items()}
            classes = {name: self.classes(name) for name, kind in tasks.items() if TASKS[kind].has_classes}
            decoders = {name: self.pipeline.labels[name].decode for name in tasks}
            part = predictions_frame({t: np.asarray(v)[usable] for t, v in preds.items()}, kept, len(chunk), tasks, classes, report, decoders)
            explained = [(column_name(t, i), v) for t, per in contributions.items() for i, v in per.items()]
            explained += [(weight_column(i), v) for i, v in (weights or {}).items()]
            for column, values in explained:
                col = np.full(len(chunk), np.nan)
                col[kept] = np.asarray(values, dtype=np.float64)[usable]
                part[column] = col
            part.index = range(start, start + len(chunk))
            outputs.append(part)
        result = pd.concat(outputs) if outputs else pd.DataFrame()
        warn_about_problems(result, root_path)
        return result

    def evaluate(self, data: str | Path | None = None, *, split: str = "test", batch_size: int = 256) -> dict[str, Any]:
        """Metrics on a manifest (with label columns) or, by default, the training config's test split."""
        from polyfuse.data.collate import Collator
        from polyfuse.data.prepare import prepare_data
        from polyfuse.evaluate.metrics import summarize
        from polyfuse.evaluate.predict import collect_predictions
        from polyfuse.evaluate.report import loader_factory

        config = self.config.copy()
        config.data.augment.enabled = False
        if data is not None:
            config.data.dataset = None
            config.data.train = str(data)
            config.data.valid = None
            config.data.test = None
            config.data.split.valid = 0.0
            config.data.split.test = 0.0
            config.data.root = None
            config.data.max_train_rows = None  # a few-label fine-tuning run still evaluates every row given
            split = "train"
        prepared = prepare_data(config, pipeline=self.pipeline, splits=(split,), progress=False)
        dataset = prepared.datasets[split]
        preds = collect_predictions(self.model, loader_factory(dataset, Collator(self.pipeline), batch_size)(), config.tasks)
        types = {n: t.type for n, t in config.tasks.items()}
        result = {"rows": len(dataset), "metrics": summarize(types, preds.preds, preds.labels), "data_report": prepared.report.summary()}
        # cross-modal retrieval of models with contrastive / translation objectives: {objective: {direction: ...}}
        from polyfuse.retrieval.embed import evaluate_retrieval, split_groups

        frame = getattr(dataset, "frame", None)  # rows streamed from shards have no table to group by
        match = config.retrieval.match if frame is not None and config.retrieval.match in frame.columns else None
        retrieval = evaluate_retrieval(
            self.model, loader_factory(dataset, Collator(self.pipeline), batch_size),
            ks=config.retrieval.ks, groups=split_groups(dataset, match),
        )
        if retrieval:
            result["retrieval"] = retrieval
        return result


def iter_chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
