"""Dynamic int8 quantization: PyTorch (``quantize_dynamic`` on Linear/LSTM/GRU) and ONNX Runtime
(``quantize_dynamic`` on the exported graph's MatMul/Gemm/LSTM/GRU/Attention), with sizes and
test-split metrics before and after."""

from __future__ import annotations

import copy
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polyfuse.errors import PolyfuseError

#: Module types PyTorch's dynamic quantization replaces by int8-weight versions.
TORCH_QUANTIZED = (nn.Linear, nn.LSTM, nn.GRU)
#: ONNX ops quantized by ONNX Runtime (the graph counterparts of TORCH_QUANTIZED). Conv is left
#: in float: ONNX Runtime's ConvInteger has no int8-weight kernel on CPU.
ONNX_QUANTIZED = ("MatMul", "Gemm", "LSTM", "GRU", "Attention")
INT8_ONNX_FILE = "model.int8.onnx"
REPORT_FILE = "quantize_report.json"


def quantize_torch(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with int8 weights in Linear/LSTM/GRU layers (activations quantized on the fly)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch warns that quantized tensor types will move to torchao
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        return quantize_dynamic(copy.deepcopy(model).eval(), set(TORCH_QUANTIZED), dtype=torch.qint8)


def torch_size_bytes(model: nn.Module) -> int:
    """Bytes of the model's serialized state dict (packed int8 weights count as stored).

    ``torch.save`` only measures here; nothing is written to disk or ever loaded back.
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def quantize_onnx(source: str | Path, target: str | Path) -> Path:
    """ONNX Runtime dynamic quantization (int8 weights, uint8 activations computed at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("root").setLevel(logging.ERROR)  # the quantizer logs pre-processing advice there
    target = Path(target)
    try:
        quantize_dynamic(
            str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=list(ONNX_QUANTIZED),
        )
    except Exception as exc:  # noqa: BLE001 - the quantizer raises plain exceptions
        raise PolyfuseError(f"ONNX Runtime could not quantize {source}: {type(exc).__name__}: {exc}") from None
    return target


def quantize_checkpoint(
    ckpt: str | Path, out: str | Path | None = None, *, data: str | Path | None = None, batch_size: int = 64
) -> dict[str, Any]:
    """``polyfuse quantize``: int8 PyTorch and ONNX Runtime versions, scored on the test split.

    ``out`` (default ``<ckpt>-int8``) receives the ONNX export (``model.onnx``), the int8 graph
    (``model.int8.onnx``, loadable with ``OnnxPredictor(out, onnx_file="model.int8.onnx")``) and
    ``quantize_report.json`` (also returned).
    """
    from polyfuse.deploy.export import ONNX_FILE, export_checkpoint
    from polyfuse.deploy.onnx_predictor import OnnxPredictor
    from polyfuse.deploy.rows import batches, checkpoint_rows, main_metric, score, torch_predict_fn
    from polyfuse.predictor import Predictor

    ckpt = Path(ckpt)
    out = Path(out) if out is not None else ckpt.with_name(ckpt.name + "-int8")
    predictor = Predictor.load(ckpt)
    rows = checkpoint_rows(predictor.config, predictor.pipeline, data)
    exported = export_checkpoint(ckpt, out, data=data, reuse=True, predictor=predictor, rows=rows)
    tasks = {name: task.type for name, task in predictor.config.tasks.items()}
    encoded = list(batches(predictor.pipeline, rows, batch_size))
    int8_path = quantize_onnx(out / ONNX_FILE, out / INT8_ONNX_FILE)

    torch_int8 = quantize_torch(predictor.model)
    engines = {
        "torch": {
            "fp32": (predictor.model, torch_predict_fn(predictor.model, tasks)),
            "int8": (torch_int8, torch_predict_fn(torch_int8, tasks)),
        },
        "onnx": {
            "fp32": (out / ONNX_FILE, OnnxPredictor(out).predict_batch),
            "int8": (int8_path, OnnxPredictor(out, onnx_file=INT8_ONNX_FILE).predict_batch),
        },
    }
    report: dict[str, Any] = {
        "checkpoint": str(ckpt), "out": str(out), "rows": int(sum(len(b["row"]) for b in encoded)),
        "data": rows.source, "exporter": exported.result.exporter,
    }
    for backend, variants in engines.items():
        report[backend] = {}
        for variant, (artifact, predict) in variants.items():
            size = torch_size_bytes(artifact) if backend == "torch" else Path(artifact).stat().st_size
            metrics = score(predict, encoded, tasks)
            report[backend][variant] = {"bytes": int(size), "metrics": metrics}
        fp32, int8 = report[backend]["fp32"], report[backend]["int8"]
        report[backend]["compression"] = round(fp32["bytes"] / max(1, int8["bytes"]), 3)  # fp32 size / int8 size
    main = main_metric(report["torch"]["fp32"]["metrics"], tasks)
    if main is not None:
        name = main[0]
        task, metric = name.split("/")
        report["metric"] = name
        for backend in engines:
            for variant in ("fp32", "int8"):
                report[backend][variant]["main"] = report[backend][variant]["metrics"].get(task, {}).get(metric)
    report["files"] = {"onnx": str(out / ONNX_FILE), "onnx_int8": str(int8_path), "report": str(out / REPORT_FILE)}
    _register_variant(out, "int8", INT8_ONNX_FILE)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2, default=float))
    return report


def _register_variant(out: Path, name: str, filename: str) -> None:
    """List ``filename`` under ``variants`` in ``onnx_model.json``."""
    from polyfuse.deploy.export import META_FILE

    path = out / META_FILE
    meta = json.loads(path.read_text())
    meta.setdefault("variants", {})[name] = filename
    path.write_text(json.dumps(meta, indent=2))
