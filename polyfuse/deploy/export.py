"""ONNX export of a MultimodalModel, verified against PyTorch on real rows.

The graph takes flat tensors named ``<input>.<key>`` (``image.pixels``, ``audio.values``,
``audio.mask``...) plus ``<input>.present`` (bool [B]), and returns one tensor per task named
after it: class probabilities (softmax) for classification, label probabilities (sigmoid)
for multilabel, values for regression. The batch axis is dynamic, and so is the length axis
of text, audio, sequence and video inputs.

The dynamo exporter (``torch.export``) is tried first; when it cannot keep an axis dynamic
(PyTorch's RNN kernels pin the time axis) or its graph fails the checks, the TorchScript
exporter is used instead. ``onnx_model.json`` records which one wrote the graph.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from polyfuse._version import __version__
from polyfuse.tasks import TASKS, deployable_types
from polyfuse.errors import PolyfuseError
from polyfuse.types import INPUT_KEYS

ONNX_FILE = "model.onnx"
META_FILE = "onnx_model.json"
FORMAT = "polyfuse-onnx"
#: Largest max |ONNX Runtime - PyTorch| accepted after export.
DEFAULT_ATOL = 1e-4
#: Input keys whose axis 1 is a length (padded to the batch's longest row).
LENGTH_AXES: dict[str, tuple[str, ...]] = {
    "text": ("input_ids", "attention_mask"),
    "audio": ("waveform",),
    "sequence": ("values", "mask"),
    "video": ("frames", "frame_mask"),
}
EXPORTERS = ("auto", "dynamo", "torchscript")
#: Task types a deployed graph returns (generation needs a decoding loop, which is not exported).
SUPPORTED_TASKS = deployable_types()


class ExportError(PolyfuseError):
    """The model could not be exported, or the exported graph does not match PyTorch."""


def task_outputs(task_type: str, outputs: Tensor) -> Tensor:
    """Head outputs -> what a deployed model returns: the task type's predictions."""
    return TASKS[task_type].predictions(outputs)


# --------------------------------------------------------------------------- graph layout


@dataclass
class TensorInfo:
    """One graph input or output as ``onnx_model.json`` describes it."""

    name: str
    dtype: str  # numpy dtype name: float32, int64, bool
    shape: list[int | str]  # ints = fixed, strings = dynamic axis names
    input: str | None = None  # graph inputs: the model input it belongs to
    key: str | None = None  # graph inputs: the batch key (pixels, mask, present...)
    kind: str | None = None
    task: str | None = None  # graph outputs: the task
    type: str | None = None  # graph outputs: the task type
    classes: list[Any] | None = None


def input_layout(model: nn.Module, kinds: Mapping[str, str]) -> list[tuple[str, tuple[str, ...]]]:
    """(input name, batch keys) in the model's input order; ``present`` comes after each input's keys."""
    names = list(getattr(model, "input_names", kinds))
    missing = [n for n in names if n not in kinds]
    if missing:
        raise ExportError(f"no input kind known for model input(s) {missing}")
    return [(name, tuple(INPUT_KEYS[kinds[name]])) for name in names]


def flat_names(layout: Sequence[tuple[str, tuple[str, ...]]]) -> list[str]:
    return [f"{name}.{key}" for name, keys in layout for key in (*keys, "present")]


def flatten_batch(batch: Mapping[str, Any], layout: Sequence[tuple[str, tuple[str, ...]]]) -> list[np.ndarray]:
    """A numpy batch (pipeline layout) -> arrays in graph input order."""
    out = []
    for name, keys in layout:
        for key in keys:
            out.append(np.ascontiguousarray(batch["inputs"][name][key]))
        out.append(np.ascontiguousarray(batch["present"][name], dtype=bool))
    return out


class FlatModel(nn.Module):
    """A MultimodalModel behind flat tensors (graph input order) -> one output per task."""

    def __init__(
        self, model: nn.Module, layout: Sequence[tuple[str, tuple[str, ...]]], tasks: Mapping[str, str]
    ) -> None:
        super().__init__()
        self.model = model
        self.layout = [(name, tuple(keys)) for name, keys in layout]
        self.tasks = dict(tasks)

    def forward(self, *flat: Tensor) -> tuple[Tensor, ...]:
        inputs: dict[str, dict[str, Tensor]] = {}
        present: dict[str, Tensor] = {}
        i = 0
        for name, keys in self.layout:
            inputs[name] = {}
            for key in keys:
                inputs[name][key] = flat[i]
                i += 1
            present[name] = flat[i]
            i += 1
        out = self.model(inputs, present)
        return tuple(task_outputs(t, out.outputs[name]) for name, t in self.tasks.items())


# --------------------------------------------------------------------------- example batch


def _pad_axis1(array: np.ndarray, extra: int, fill: Any) -> np.ndarray:
    pad = [(0, 0)] * array.ndim
    pad[1] = (0, extra)
    return np.pad(array, pad, constant_values=fill)


def example_batch(
    batch: Mapping[str, Any], kinds: Mapping[str, str], pad_ids: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """A copy of ``batch`` fit for tracing: at least 2 rows, and every dynamic size distinct and >= 2.

    ``torch.export`` treats sizes 0/1 as constants and equal sizes as one symbol, so rows are
    repeated and length axes padded (padding is what collate adds anyway: masked, zero, pad id).
    """
    pad_ids = dict(pad_ids or {})
    n = len(batch["row"])
    if n == 0:
        raise ExportError("no usable row to trace the model with")
    reps = int(np.ceil(2 / n)) if n < 2 else 1
    inputs = {name: {k: np.concatenate([v] * reps) for k, v in arrays.items()} for name, arrays in batch["inputs"].items()}
    present = {name: np.concatenate([v] * reps) for name, v in batch["present"].items()}
    used = {n * reps}
    for name, keys in LENGTH_AXES.items():
        for inp, kind in kinds.items():
            if kind != name or inp not in inputs:
                continue
            length = inputs[inp][keys[0]].shape[1]
            target = max(length, 2)
            while target in used:
                target += 1
            used.add(target)
            if target != length:
                for key in keys:
                    fill = pad_ids.get(inp, 0) if key == "input_ids" else 0
                    inputs[inp][key] = _pad_axis1(inputs[inp][key], target - length, fill)
    return {"inputs": inputs, "present": present, "labels": batch.get("labels", {}), "row": np.arange(n * reps)}


def dynamic_axes(layout: Sequence[tuple[str, tuple[str, ...]]], kinds: Mapping[str, str]) -> dict[str, dict[int, str]]:
    """Graph input name -> {axis: name}: batch for all, ``<input>.length`` for length axes."""
    axes: dict[str, dict[int, str]] = {}
    for name, keys in layout:
        for key in (*keys, "present"):
            entry = {0: "batch"}
            if key in LENGTH_AXES.get(kinds[name], ()):
                entry[1] = f"{name}.length"
            axes[f"{name}.{key}"] = entry
    return axes


# --------------------------------------------------------------------------- exporters


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Exporter chatter (loggers, deprecation warnings) silenced while exporting, restored after."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx.experimental.symbolic_shapes", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _export_dynamo(
    flat: FlatModel, args: tuple[Tensor, ...], names: list[str], outputs: list[str],
    axes: Mapping[str, Mapping[int, str]], path: Path, opset: int | None,
) -> None:
    """``torch.export`` (non-strict, every dynamic axis must stay dynamic) -> ONNX via onnxscript."""
    program = _exported_program(flat, args, names, axes)
    onnx_program = torch.onnx.export(
        program, args, input_names=names, output_names=outputs, opset_version=opset, dynamo=True,
        optimize=True, verbose=False, external_data=False,
    )
    if onnx_program is None:  # pragma: no cover - torch always returns it with dynamo=True
        raise ExportError("the dynamo exporter returned no program")
    onnx_program.save(str(path), external_data=False)
    _name_dynamic_axes(path, names, axes)


def _name_dynamic_axes(path: Path, names: list[str], axes: Mapping[str, Mapping[int, str]]) -> None:
    """Rename torch.export's symbols (``s12``) to the axis names (``batch``, ``audio.length``) everywhere in the graph."""
    import onnx

    model = onnx.load(str(path))
    inputs = {i.name: i for i in model.graph.input}
    rename: dict[str, str] = {}
    for name in names:
        graph_input = inputs.get(name)
        if graph_input is None:
            continue
        dims = graph_input.type.tensor_type.shape.dim
        for axis, axis_name in axes[name].items():
            if axis < len(dims) and dims[axis].dim_param:
                rename.setdefault(dims[axis].dim_param, axis_name)
    if not rename:
        return
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]
    onnx.save(model, str(path))


def _exported_program(
    flat: FlatModel, args: tuple[Tensor, ...], names: list[str], axes: Mapping[str, Mapping[int, str]]
) -> Any:
    """``torch.export.export`` with one symbol per named axis; range refinements suggested by
    torch are accepted, an axis pinned to a constant is not (ExportError)."""
    from torch.export.dynamic_shapes import refine_dynamic_shapes_from_suggested_fixes

    symbols: dict[str, Any] = {}
    for axis_names in axes.values():
        for axis_name in axis_names.values():
            ident = "".join(c if c.isalnum() else "_" for c in axis_name)
            symbols.setdefault(axis_name, torch.export.Dim(f"d_{ident}"))
    shapes: Any = {"flat": tuple({a: symbols[n] for a, n in axes[name].items()} for name in names)}
    for attempt in range(2):
        try:
            return torch.export.export(flat, args, dynamic_shapes=shapes, strict=False)
        except torch._dynamo.exc.UserError as exc:
            if attempt:
                raise
            refined = refine_dynamic_shapes_from_suggested_fixes(exc.msg, shapes)
            pinned = [
                f"{names[i]} axis {a}" for i, spec in enumerate(refined["flat"]) for a, d in (spec or {}).items()
                if isinstance(d, int)
            ]
            if pinned:
                raise ExportError(f"torch.export keeps these axes constant: {', '.join(pinned)}") from None
            shapes = refined
    raise AssertionError("unreachable")  # pragma: no cover


def _export_torchscript(
    flat: FlatModel, args: tuple[Tensor, ...], names: list[str], outputs: list[str],
    axes: Mapping[str, Mapping[int, str]], path: Path, opset: int | None,
) -> None:
    all_axes: dict[str, dict[int, str]] = {k: dict(v) for k, v in axes.items()}
    for out in outputs:
        all_axes[out] = {0: "batch"}
    torch.onnx.export(
        flat, args, str(path), input_names=names, output_names=outputs, dynamic_axes=all_axes,
        opset_version=opset or 17, dynamo=False, do_constant_folding=True,
    )


@dataclass
class ExportResult:
    """What ``export_model`` wrote and how well the graph matches PyTorch."""

    path: Path
    exporter: str  # dynamo | torchscript
    opset: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    max_abs_diff: float
    checks: list[dict[str, Any]] = field(default_factory=list)  # per verification batch
    fallback_reason: str | None = None
    seconds: float = 0.0


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _opset_of(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def parity(
    session: Any, flat: FlatModel, batches: Iterable[Mapping[str, Any]], names: list[str], outputs: list[str]
) -> list[dict[str, Any]]:
    """Max |ORT - PyTorch| per task for each batch (an ORT failure is recorded as an error)."""
    graph_inputs = {i.name for i in session.get_inputs()}
    results = []
    for batch in batches:
        arrays = flatten_batch(batch, flat.layout)
        rows = int(len(batch["row"]))
        with torch.no_grad():
            expected = [t.numpy() for t in flat(*(torch.from_numpy(a) for a in arrays))]
        feed = {n: a for n, a in zip(names, arrays) if n in graph_inputs}
        try:
            got = session.run(outputs, feed)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            results.append({"rows": rows, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"})
            continue
        diffs = {}
        for task, want, have in zip(outputs, expected, got):
            if want.shape != have.shape:
                diffs[task] = float("inf")
            else:
                diffs[task] = float(np.max(np.abs(want.astype(np.float64) - have.astype(np.float64)), initial=0.0))
        results.append({"rows": rows, "shapes": {n: list(a.shape) for n, a in zip(names, arrays)}, "max_abs_diff": diffs})
    return results


def _worst(checks: list[dict[str, Any]]) -> float:
    if any("error" in c for c in checks):
        return float("inf")
    return max((d for c in checks for d in c["max_abs_diff"].values()), default=0.0)


def _describe(checks: list[dict[str, Any]]) -> str:
    parts = []
    for c in checks:
        if "error" in c:
            parts.append(f"{c['rows']} rows: ONNX Runtime failed ({c['error']})")
        else:
            parts.append(f"{c['rows']} rows: " + ", ".join(f"{t} {d:.3g}" for t, d in c["max_abs_diff"].items()))
    return "; ".join(parts)


def export_model(
    model: nn.Module,
    kinds: Mapping[str, str],
    tasks: Mapping[str, str],
    example: Mapping[str, Any],
    path: str | Path,
    *,
    checks: Sequence[Mapping[str, Any]] = (),
    opset: int | None = None,
    exporter: str = "auto",
    atol: float = DEFAULT_ATOL,
    pad_ids: Mapping[str, int] | None = None,
    classes: Mapping[str, list[Any]] | None = None,
) -> ExportResult:
    """Export ``model`` to ``path`` and check ONNX Runtime against PyTorch on ``example`` and ``checks``.

    ``kinds``: input name -> kind; ``tasks``: task name -> type; ``example`` and ``checks``
    are numpy batches in the pipeline layout. ``exporter="auto"`` tries dynamo, then
    TorchScript when dynamo fails or its graph does not match. Raises ExportError when no
    exporter gives a graph within ``atol`` (the message gives the differences).
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter {exporter!r} is not known; allowed: {', '.join(EXPORTERS)}")
    started = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    layout = input_layout(model, kinds)
    flat = FlatModel(model, layout, tasks).eval()
    names, outputs = flat_names(layout), list(tasks)
    axes = dynamic_axes(layout, kinds)
    traced = example_batch(example, kinds, pad_ids)
    args = tuple(torch.from_numpy(a) for a in flatten_batch(traced, layout))
    verify = [dict(example), *checks]
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    failures: list[str] = []
    for name in order:
        try:
            with _quiet():
                (_export_dynamo if name == "dynamo" else _export_torchscript)(flat, args, names, outputs, axes, path, opset)
        except Exception as exc:  # noqa: BLE001 - exporter failures come in many types
            failures.append(f"{name} exporter failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}")
            continue
        results = parity(_session(path), flat, verify, names, outputs)
        worst = _worst(results)
        if worst <= atol:
            return ExportResult(
                path, name, _opset_of(path), graph_inputs(path, layout, kinds), graph_outputs(path, tasks, classes),
                worst, results, "; ".join(failures) or None, round(time.perf_counter() - started, 2),
            )
        failures.append(f"{name} graph differs from PyTorch by up to {worst:.3g} (tolerance {atol:g}): {_describe(results)}")
    raise ExportError("ONNX export failed: " + " | ".join(failures))


def graph_inputs(path: Path, layout: Sequence[tuple[str, tuple[str, ...]]], kinds: Mapping[str, str]) -> list[TensorInfo]:
    """The graph's inputs (an exporter may drop inputs the model never reads) with dtype and shape."""
    owner = {f"{name}.{key}": (name, key) for name, keys in layout for key in (*keys, "present")}
    out = []
    for i in _session(path).get_inputs():
        name, key = owner.get(i.name, (None, None))
        out.append(TensorInfo(i.name, _numpy_dtype(i.type), _shape(i.shape), input=name, key=key, kind=kinds.get(name or "")))
    return out


def graph_outputs(path: Path, tasks: Mapping[str, str], classes: Mapping[str, list[Any]] | None) -> list[TensorInfo]:
    out = []
    for o in _session(path).get_outputs():
        out.append(
            TensorInfo(o.name, _numpy_dtype(o.type), _shape(o.shape), task=o.name, type=tasks.get(o.name),
                       classes=list((classes or {}).get(o.name, [])) or None)
        )
    return out


def _numpy_dtype(ort_type: str) -> str:
    mapping = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(bool)": "bool", "tensor(double)": "float64", "tensor(int32)": "int32"}
    return mapping.get(ort_type, ort_type)


def _shape(shape: Sequence[Any]) -> list[int | str]:
    return [d if isinstance(d, int) else str(d) for d in shape]


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
