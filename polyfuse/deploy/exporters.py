"""The exporters (dynamo first, TorchScript when dynamo cannot keep an axis dynamic or its graph
fails the checks) and the parity check against PyTorch with ONNX Runtime."""


from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn


from polyfuse.deploy.graph import (
    DEFAULT_ATOL, EXPORTERS, ExportError, FlatModel, TensorInfo, dynamic_axes, example_batch, flat_names, flatten_batch,
    input_layout,
)


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


