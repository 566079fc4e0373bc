"""Inference benchmark: eager PyTorch vs ONNX Runtime vs int8 (PyTorch dynamic, ONNX Runtime dynamic).

Timings cover the model only (rows are decoded and preprocessed once, beforehand): latency at
batch 1 (p50/p95 over real rows) and throughput at batch 64. Warm-up calls are not timed, and
the engines take turns within every repeat (the starting engine rotates), so slow phases of a
shared machine hit every engine alike. Every engine gets the same thread count.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

ENGINES = ("eager", "torch_int8", "onnx", "onnx_int8")
LABELS = {
    "eager": "PyTorch eager (fp32)",
    "torch_int8": "PyTorch dynamic int8",
    "onnx": "ONNX Runtime (fp32)",
    "onnx_int8": "ONNX Runtime dynamic int8",
}
THROUGHPUT_BATCH = 64
LATENCY_ROWS = 32  # distinct real rows cycled through at batch 1


@dataclass
class Engine:
    name: str
    run: Callable[[Mapping[str, Any]], Mapping[str, np.ndarray]]
    size_bytes: int


def _sample_batches(pipeline: Any, rows: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Batches of one real row each (up to LATENCY_ROWS) and one of THROUGHPUT_BATCH rows (repeated if fewer)."""
    from polyfuse.deploy.rows import Rows, encode

    frame = rows.frame
    singles = []
    for i in range(min(len(frame), LATENCY_ROWS)):
        batch, _ = encode(pipeline, Rows(frame.iloc[[i]].reset_index(drop=True), rows.root, rows.source, rows.allow_outside_root))
        if len(batch["row"]):
            singles.append(batch)
    repeated = frame.iloc[np.arange(THROUGHPUT_BATCH) % max(1, len(frame))].reset_index(drop=True)
    large, _ = encode(pipeline, Rows(repeated, rows.root, rows.source, rows.allow_outside_root))
    return singles, large


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


#: Default timed rounds and untimed warm-up calls per engine.
DEFAULT_REPEATS = 200
DEFAULT_WARMUP = 20
#: A machine is called busy when an engine's median batch-1 latency exceeds its minimum by this factor.
MAX_SPREAD = 1.5


class BusyMachineError(Exception):
    """The timings' spread says other work shared the CPUs; the figures would not be the model's."""


def time_engines(
    engines: list[Engine], singles: list[dict[str, Any]], large: dict[str, Any], repeats: int, warmup: int = DEFAULT_WARMUP
) -> dict[str, dict[str, float]]:
    """Latency (ms) at batch 1 and throughput (rows/s) at the large batch, engines interleaved.

    Per engine: min, median (p50), p95 and mean latency; ``spread`` = median / min (1.0 on a quiet
    machine; a busy one stretches the median, the minimum is what the engine can do).
    """
    for engine in engines:
        for i in range(max(1, warmup)):
            engine.run(singles[i % len(singles)])
        engine.run(large)
    latency: dict[str, list[float]] = {e.name: [] for e in engines}
    batch_times: dict[str, list[float]] = {e.name: [] for e in engines}
    rows = int(len(large["row"]))
    for r in range(repeats):
        order = engines[r % len(engines) :] + engines[: r % len(engines)]
        single = singles[r % len(singles)]
        for engine in order:
            start = time.perf_counter()
            engine.run(single)
            latency[engine.name].append((time.perf_counter() - start) * 1000.0)
        for engine in order:
            start = time.perf_counter()
            engine.run(large)
            batch_times[engine.name].append(time.perf_counter() - start)
    return {
        name: {
            "latency_min_ms": float(min(latency[name])),
            "latency_p50_ms": _percentile(latency[name], 50),
            "latency_p95_ms": _percentile(latency[name], 95),
            "latency_mean_ms": float(np.mean(latency[name])),
            "spread": _percentile(latency[name], 50) / max(float(min(latency[name])), 1e-9),
            "throughput_rows_s": rows / float(np.median(batch_times[name])),
            "throughput_max_rows_s": rows / float(min(batch_times[name])),
        }
        for name in latency
    }


def check_quiet(timings: Mapping[str, Mapping[str, float]], max_spread: float = MAX_SPREAD) -> None:
    """BusyMachineError naming the engine when a median latency is more than ``max_spread`` x its minimum."""
    worst = max(timings.items(), key=lambda kv: kv[1]["spread"])
    name, t = worst
    if t["spread"] > max_spread:
        raise BusyMachineError(
            f"timings too noisy to report: {name} median {t['latency_p50_ms']:.3f} ms is {t['spread']:.2f}x its minimum "
            f"{t['latency_min_ms']:.3f} ms (limit {max_spread:.2f}x); the machine was busy. Rerun when it is quiet, "
            "with more --repeats, or raise --max-spread"
        )


def benchmark_checkpoint(
    ckpt: str | Path,
    *,
    repeats: int = DEFAULT_REPEATS,
    threads: int | None = None,
    onnx_dir: str | Path | None = None,
    data: str | Path | None = None,
    engines: tuple[str, ...] = ENGINES,
    max_spread: float | None = MAX_SPREAD,
    warmup: int = DEFAULT_WARMUP,
) -> dict[str, Any]:
    """``polyfuse bench-infer``: timings, size and test-split metric per engine, with ratios vs eager.

    ``onnx_dir`` keeps (or reuses) the ONNX export and its int8 version; default a temporary folder.
    ``max_spread``: refuse (PolyfuseError) when an engine's median latency exceeds its minimum by more
    than this factor (a busy machine); None reports whatever was measured, flagged in the report.
    """
    from polyfuse.deploy.export import ONNX_FILE, export_checkpoint
    from polyfuse.deploy.onnx_predictor import OnnxPredictor
    from polyfuse.deploy.quantize import INT8_ONNX_FILE, quantize_onnx, quantize_torch, torch_size_bytes
    from polyfuse.deploy.rows import batches, checkpoint_rows, main_metric, score, torch_predict_fn
    from polyfuse.errors import PolyfuseError
    from polyfuse.predictor import Predictor

    unknown = [e for e in engines if e not in ENGINES]
    if unknown or "eager" not in engines:
        raise PolyfuseError(f"engines: {unknown or engines} not allowed; choose among {', '.join(ENGINES)} (eager included)")
    if repeats < 1:
        raise PolyfuseError(f"--repeats: expected 1 or more, got {repeats}")
    threads = int(threads or torch.get_num_threads())
    ckpt = Path(ckpt)
    predictor = Predictor.load(ckpt)
    tasks = {name: task.type for name, task in predictor.config.tasks.items()}
    rows = checkpoint_rows(predictor.config, predictor.pipeline, data)
    encoded = list(batches(predictor.pipeline, rows, THROUGHPUT_BATCH))
    singles, large = _sample_batches(predictor.pipeline, rows)
    if not singles or len(large["row"]) == 0:
        raise PolyfuseError(f"{rows.source}: no usable row to benchmark with")

    tmp = None
    if onnx_dir is None and any(e.startswith("onnx") for e in engines):
        tmp = tempfile.TemporaryDirectory(prefix="polyfuse-bench-")
        onnx_dir = tmp.name
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        built: list[Engine] = []
        model = predictor.model.eval()
        built.append(Engine("eager", torch_predict_fn(model, tasks), torch_size_bytes(model)))
        if "torch_int8" in engines:
            q = quantize_torch(model)
            built.append(Engine("torch_int8", torch_predict_fn(q, tasks), torch_size_bytes(q)))
        exporter = None
        if onnx_dir is not None:
            out = Path(onnx_dir)
            exported = export_checkpoint(ckpt, out, data=data, reuse=True, predictor=predictor, rows=rows)
            exporter = exported.result.exporter
            if "onnx" in engines:
                built.append(Engine("onnx", OnnxPredictor(out, threads=threads).predict_batch, (out / ONNX_FILE).stat().st_size))
            if "onnx_int8" in engines:
                if not (out / INT8_ONNX_FILE).is_file():
                    quantize_onnx(out / ONNX_FILE, out / INT8_ONNX_FILE)
                built.append(
                    Engine("onnx_int8", OnnxPredictor(out, threads=threads, onnx_file=INT8_ONNX_FILE).predict_batch,
                           (out / INT8_ONNX_FILE).stat().st_size)
                )
        timings = time_engines(built, singles, large, repeats, warmup=warmup)
        if max_spread is not None:
            try:
                check_quiet(timings, max_spread)
            except BusyMachineError as exc:
                raise PolyfuseError(str(exc)) from None
        metrics = {e.name: score(e.run, encoded, tasks) for e in built}
    finally:
        torch.set_num_threads(previous_threads)
        if tmp is not None:
            tmp.cleanup()

    main = main_metric(metrics["eager"], tasks)
    base = timings["eager"]
    eager_size = next(e.size_bytes for e in built if e.name == "eager")
    results: dict[str, Any] = {}
    for e in built:
        t = timings[e.name]
        value = None
        if main is not None:
            task, metric = main[0].split("/")
            value = metrics[e.name].get(task, {}).get(metric)
        results[e.name] = {
            "label": LABELS[e.name],
            **t,
            "bytes": int(e.size_bytes),
            "metric": value,
            "metrics": metrics[e.name],
            "speedup_p50": base["latency_p50_ms"] / t["latency_p50_ms"],
            "speedup_min": base["latency_min_ms"] / t["latency_min_ms"],
            "throughput_ratio": t["throughput_rows_s"] / base["throughput_rows_s"],
            "size_ratio": e.size_bytes / eager_size,
        }
    report = {
        "checkpoint": display_path(ckpt),
        "data": display_path(rows.source),
        "rows": int(sum(len(b["row"]) for b in encoded)),
        "repeats": repeats,
        "warmup": warmup,
        "max_spread": max_spread,
        "worst_spread": max(t["spread"] for t in timings.values()),
        "threads": threads,
        "latency_batch": 1,
        "throughput_batch": THROUGHPUT_BATCH,
        "metric": main[0] if main else None,
        "exporter": exporter,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "engines": results,
    }
    report["markdown"] = markdown_table(report)
    return report


def display_path(path: Any) -> str:
    """A path as a result file may show it: relative to the working directory or to the polyfuse
    cache (``$POLYFUSE_CACHE/...``), never the absolute path of the machine that ran it."""
    text = str(path)
    p = Path(text)
    if not p.is_absolute():
        return text
    from polyfuse.data.datasets.base import cache_root

    for base, label in ((Path.cwd(), None), (cache_root(), "$POLYFUSE_CACHE")):
        try:
            rel = p.resolve().relative_to(Path(base).resolve())
        except ValueError:
            continue
        return rel.as_posix() if label is None else f"{label}/{rel.as_posix()}"
    return p.name


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def markdown_table(report: Mapping[str, Any]) -> str:
    """The benchmark as a markdown table (ratios vs eager: >1 = faster / more rows/s / larger)."""
    metric = report.get("metric") or "metric"
    lines = [
        f"| engine | min ms (batch 1) | p50 ms | p95 ms | rows/s (batch {report['throughput_batch']}) | size | {metric} "
        "| speed-up p50 (min) vs eager | throughput vs eager | size vs eager |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["engines"].items():
        value = "n/a" if r["metric"] is None else f"{r['metric']:.4f}"
        lines.append(
            f"| {r['label']} | {r['latency_min_ms']:.3f} | {r['latency_p50_ms']:.3f} | {r['latency_p95_ms']:.3f} "
            f"| {r['throughput_rows_s']:.0f} | {_size(r['bytes'])} | {value} | {r['speedup_p50']:.2f}x ({r['speedup_min']:.2f}x) "
            f"| {r['throughput_ratio']:.2f}x | {r['size_ratio']:.2f}x |"
        )
    lines.append("")
    spread = (f"largest median/min spread {report['worst_spread']:.2f}x"
              + (f" (refused above {report['max_spread']:.2f}x)" if report.get("max_spread") else " (not checked)"))
    lines.append(
        f"{report['rows']} test rows ({report['data']}); {report['repeats']} interleaved repeats after "
        f"{report['warmup']} warm-up calls; {spread}; "
        f"{report['threads']} thread(s) per engine; model time only (rows preprocessed beforehand); "
        f"{report['machine']['processor']}, {report['machine']['cpus']} CPUs, torch {report['machine']['torch']}."
    )
    return "\n".join(lines) + "\n"
