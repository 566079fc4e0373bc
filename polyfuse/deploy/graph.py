"""The graph an ONNX export takes and returns: flat tensors ``<input>.<key>`` plus ``<input>.present``
(bool [B]) in, one tensor per task out (the task type's predictions); a flat wrapper of the model,
an example batch and the dynamic axes (batch, and the length axis of text, audio, sequence, video)."""


from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from torch import Tensor, nn

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


