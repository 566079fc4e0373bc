"""ONNX export of a MultimodalModel, verified against PyTorch on real rows.

The graph takes flat tensors named ``<input>.<key>`` (``image.pixels``, ``audio.values``,
``audio.mask``...) plus ``<input>.present`` (bool [B]), and returns one tensor per task named
after it: class probabilities (softmax) for classification, label probabilities (sigmoid)
for multilabel, values for regression. The batch axis is dynamic, and so is the length axis
of text, audio, sequence and video inputs.

The dynamo exporter (``torch.export``) is tried first; when it cannot keep an axis dynamic
(PyTorch's RNN kernels pin the time axis) or its graph fails the checks, the TorchScript
exporter is used instead. ``onnx_model.json`` records which one wrote the graph.

This module exports a checkpoint directory (``export_checkpoint``); the graph layout is
``polyfuse.deploy.graph``'s and the exporters with their parity check ``polyfuse.deploy.exporters``'.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polyfuse._version import __version__
from polyfuse.deploy.exporters import ExportResult, export_model
from polyfuse.deploy.graph import (  # noqa: F401  (callers import the file names and ExportError from here)
    DEFAULT_ATOL, FORMAT, META_FILE, ONNX_FILE, SUPPORTED_TASKS, ExportError, TensorInfo,
)
from polyfuse.tasks import TASKS


# --------------------------------------------------------------------------- checkpoints


@dataclass
class CheckpointExport:
    """``polyfuse export``'s result: the folder and the export details."""

    out: Path
    result: ExportResult
    rows: int

    def summary(self) -> dict[str, Any]:
        r = self.result
        return {
            "out": str(self.out), "onnx": str(r.path), "exporter": r.exporter, "opset": r.opset,
            "max_abs_diff": r.max_abs_diff, "rows_checked": self.rows, "seconds": r.seconds,
            "inputs": [i.name for i in r.inputs], "outputs": [o.name for o in r.outputs],
            "fallback_reason": r.fallback_reason,
        }


def verification_batches(pipeline: Any, rows: Any, limit: int = 16) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """(main batch, extra batches, rows used) from real rows: up to ``limit`` rows plus one row per input
    with that modality missing; extra batches of 3 rows and of 1 row test other batch sizes and lengths."""
    from polyfuse.deploy.rows import encode, with_missing_rows

    sample = rows.head(limit)
    main, _ = encode(pipeline, with_missing_rows(sample, pipeline))
    extra = []
    for n in (3, 1):
        if len(sample.frame) >= n:
            batch, _ = encode(pipeline, sample.head(n))
            if len(batch["row"]):
                extra.append(batch)
    return main, extra, int(len(main["row"]))


def export_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    *,
    opset: int | None = None,
    data: str | Path | None = None,
    exporter: str = "auto",
    atol: float = DEFAULT_ATOL,
    limit: int = 16,
    reuse: bool = False,
    predictor: Any = None,
    rows: Any = None,
) -> CheckpointExport:
    """``polyfuse export``: ``model.onnx``, ``pipeline/``, ``config.yaml`` and ``onnx_model.json`` in ``out``.

    Verified on real rows (``data`` or the run's test split) including rows with a modality
    missing; raises ExportError (nothing described in ``onnx_model.json``) when ONNX Runtime
    and PyTorch differ by more than ``atol``. ``reuse`` keeps an export already in ``out`` made
    from these exact weights. ``predictor`` / ``rows`` skip loading them again.
    """
    from polyfuse.deploy.rows import checkpoint_rows
    from polyfuse.predictor import Predictor

    if reuse:
        previous = existing_export(ckpt, out)
        if previous is not None:
            return previous
    predictor = predictor or Predictor.load(ckpt)
    if predictor.pipeline is None:
        raise ExportError(f"{ckpt}: the checkpoint has no pipeline/ folder; it cannot be verified or served")
    if not predictor.config.tasks:
        raise ExportError(f"{ckpt}: the model has no tasks; only task outputs are exported")
    unsupported = {n: t.type for n, t in predictor.config.tasks.items() if not TASKS[t.type].deployable}
    if unsupported:
        raise ExportError(
            f"{ckpt}: task(s) {unsupported} cannot be exported; ONNX export covers {', '.join(SUPPORTED_TASKS)} tasks"
        )
    out = Path(out)
    if out.resolve() == Path(ckpt).resolve():
        raise ExportError("--out must be another folder than the checkpoint")
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / META_FILE
    if meta_path.exists():
        meta_path.unlink()  # a failed export must not leave a stale description behind
    for derived in out.glob("model.*.onnx"):  # variants (int8) of a previous graph
        derived.unlink()
    rows = rows if rows is not None else checkpoint_rows(predictor.config, predictor.pipeline, data)
    main, extra, used = verification_batches(predictor.pipeline, rows, limit)
    kinds = dict(predictor.inputs)
    tasks = {name: task.type for name, task in predictor.config.tasks.items()}
    classes = {t: predictor.classes(t) for t, kind in tasks.items() if TASKS[kind].has_classes}
    pad_ids = {name: spec.pad_id for name, spec in predictor.specs.items()}
    result = export_model(
        predictor.model, kinds, tasks, main, out / ONNX_FILE, checks=extra, opset=opset,
        exporter=exporter, atol=atol, pad_ids=pad_ids, classes=classes,
    )
    ckpt = Path(ckpt)
    if (out / "pipeline").exists():
        shutil.rmtree(out / "pipeline")
    shutil.copytree(ckpt / "pipeline", out / "pipeline")
    shutil.copy2(ckpt / "config.yaml", out / "config.yaml")
    if (ckpt / "metrics.json").is_file():
        shutil.copy2(ckpt / "metrics.json", out / "metrics.json")
    meta = {
        "format": FORMAT,
        "polyfuse_version": __version__,
        "onnx": ONNX_FILE,
        "opset": result.opset,
        "exporter": result.exporter,
        "fallback_reason": result.fallback_reason,
        "inputs": [_info_dict(i) for i in result.inputs],
        "input_kinds": kinds,
        "outputs": [_info_dict(o) for o in result.outputs],
        "tasks": {t: {"type": kind, "classes": classes.get(t)} for t, kind in tasks.items()},
        "verification": {
            "rows": used, "source": rows.source, "atol": atol, "max_abs_diff": result.max_abs_diff, "batches": result.checks,
        },
        "source_checkpoint": str(ckpt.resolve()),
        "source_sha256": _weights_sha256(ckpt),
        "seconds": result.seconds,
    }
    meta_path.write_text(json.dumps(meta, indent=2, default=_json_default))
    return CheckpointExport(out, result, used)


def _weights_sha256(ckpt: Path) -> str | None:
    """The checkpoint's recorded SHA-256 of model.safetensors (from its COMPLETE marker)."""
    try:
        return json.loads((Path(ckpt) / "COMPLETE").read_text())["sha256"]["model.safetensors"]
    except (OSError, ValueError, KeyError):
        return None


def existing_export(ckpt: str | Path, out: str | Path) -> CheckpointExport | None:
    """The export in ``out`` when it was made (and verified) from ``ckpt``'s current weights."""
    out = Path(out)
    try:
        meta = json.loads((out / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    sha = _weights_sha256(Path(ckpt))
    if sha is None or meta.get("source_sha256") != sha or not (out / meta.get("onnx", ONNX_FILE)).is_file():
        return None
    check = meta.get("verification", {})
    result = ExportResult(
        out / meta.get("onnx", ONNX_FILE), meta.get("exporter", "?"), int(meta.get("opset", 0)),
        [TensorInfo(**i) for i in meta.get("inputs", [])], [TensorInfo(**o) for o in meta.get("outputs", [])],
        float(check.get("max_abs_diff", 0.0)), list(check.get("batches", [])), meta.get("fallback_reason"),
        float(meta.get("seconds", 0.0)),
    )
    return CheckpointExport(out, result, int(check.get("rows", 0)))


def _info_dict(info: TensorInfo) -> dict[str, Any]:
    return {k: v for k, v in asdict(info).items() if v is not None}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return str(obj)
