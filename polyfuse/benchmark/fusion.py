"""`polyfuse benchmark fusion`: unimodal baselines and every fusion, same encoders and budget, over seeds.

Each variant is the base config with a few dotted overrides (``data.use=[audio]``,
``model.fusion={name: gated}``, ``data.augment.modality_dropout=0.3``, ``train.seed=1``), trained by
the ordinary trainer into ``OUT/runs/<variant>/seed<k>``. A finished run (its ``COMPLETE``
marker) is reused, so an interrupted benchmark continues where it stopped. Per run it keeps the
test metric, the metric with each input removed at test time (the run's modality-contribution
evaluation), parameters, training seconds and eager latency at batch 1.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

from polyfuse.config import Config
from polyfuse.errors import PolyfuseError
from polyfuse.presets.variants import FUSION, UNIMODAL, Variant, plan_variants  # noqa: F401  (read from here too)

LATENCY_REPEATS = 20


def probe(config: Config) -> Config:
    """``config`` with its inputs and tasks filled in, as training would infer them (from the first training rows)."""
    from polyfuse.data.prepare import prepare_data

    limit = config.data.max_rows or 64
    prepared = prepare_data(config.with_overrides([f"data.max_rows={min(64, limit)}"]), splits=("train",), progress=False)
    return prepared.config  # only its inputs and tasks are read; the runs train with ``config`` itself


def input_names(config: Config) -> list[str]:
    """The inputs a resolved config trains on (``data.use`` applied)."""
    return [n for n in config.data.inputs if config.data.use is None or n in config.data.use]


def resolve_fusions(spec: str) -> list[str]:
    """``all`` or a comma list of registered fusion names (unknown names are an error listing the allowed ones)."""
    from polyfuse.registry import FUSIONS

    allowed = FUSIONS.names()
    if spec.strip() in ("", "all"):
        return list(allowed)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise PolyfuseError(f"--fusions: {', '.join(unknown)} not registered; allowed: all, {', '.join(allowed)}")
    return names


def eager_latency_ms(run_dir: Path, repeats: int = LATENCY_REPEATS) -> float:
    """Median eager latency (ms) of the saved model at batch 1 on real test rows (model only, after warm-up)."""
    from polyfuse.deploy.bench import Engine, _sample_batches, time_engines
    from polyfuse.deploy.rows import checkpoint_rows, torch_predict_fn
    from polyfuse.predictor import Predictor

    predictor = Predictor.load(run_dir)
    tasks = {name: task.type for name, task in predictor.config.tasks.items()}
    rows = checkpoint_rows(predictor.config, predictor.pipeline)
    singles, large = _sample_batches(predictor.pipeline, rows)
    if not singles:
        return float("nan")
    engine = Engine("eager", torch_predict_fn(predictor.model, tasks), 0)  # runs under inference_mode itself
    return time_engines([engine], singles, large, repeats=repeats)["eager"]["latency_p50_ms"]


def main_metric_name(config: Config) -> tuple[str, str]:
    """(task, metric) the leaderboard ranks by: the first task's main metric (acc, mae, f1)."""
    from polyfuse.tasks import TASKS

    if not config.tasks:
        raise PolyfuseError("benchmark fusion needs a task with labels (a dataset with labels, or --label COLUMN)")
    task, spec = next(iter(config.tasks.items()))
    return task, TASKS[spec.type].main_metric[0]


def run_record(run_dir: Path, task: str, metric: str, latency: bool) -> dict[str, Any]:
    """What the leaderboard keeps of one finished run."""
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    contribution = metrics.get("contribution") or {}
    without = {name: values.get(task, {}).get(metric) for name, values in (contribution.get("without") or {}).items()}
    return {
        "run": str(run_dir),
        "test": metrics.get("test", {}).get(task, {}).get(metric),
        "without": without,
        "weights": contribution.get("weights"),
        "parameters": metrics.get("parameters"),
        "train_seconds": metrics.get("train_seconds"),
        "latency_ms": eager_latency_ms(run_dir) if latency else None,
    }


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarize_variant(variant: Variant) -> dict[str, Any]:
    """Mean and std over seeds of every number of a variant."""
    runs = variant.runs
    test_mean, test_std = mean_std([r["test"] for r in runs])
    names = sorted({n for r in runs for n in r["without"]})
    without = {n: dict(zip(("mean", "std"), mean_std([r["without"].get(n) for r in runs]))) for n in names}
    return {
        "key": variant.key,
        "kind": variant.kind,
        "fusion": variant.fusion,
        "modality_dropout": variant.modality_dropout,
        "overrides": variant.overrides,
        "seeds": len(runs),
        "test_mean": test_mean,
        "test_std": test_std,
        "without": without,
        "parameters": runs[0]["parameters"] if runs else None,
        "train_seconds": mean_std([r["train_seconds"] for r in runs])[0],
        "latency_ms": mean_std([r["latency_ms"] for r in runs])[0],
        "runs": runs,
    }


def run_fusion_benchmark(
    config: Config,
    out: str | Path,
    *,
    fusions: Sequence[str],
    seeds: int = 3,
    modality_dropout: float = 0.0,
    unimodal: bool = True,
    latency: bool = True,
    on_run: Callable[[str, int, dict[str, Any]], None] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train every variant for ``seeds`` seeds (seed = base seed + k) and return the leaderboard dict."""
    from polyfuse.build import validate_config
    from polyfuse.train.runner import run_training
    from polyfuse.checkpoint import MARKER

    if seeds < 1:
        raise PolyfuseError(f"--seeds: expected 1 or more, got {seeds}")
    if not 0.0 <= modality_dropout < 1.0:
        raise PolyfuseError(f"--modality-dropout: expected a probability in [0, 1), got {modality_dropout}")
    validate_config(config)
    resolved = probe(config)
    task, metric = main_metric_name(resolved)
    inputs = input_names(resolved)
    variants = plan_variants(inputs, fusions, modality_dropout, unimodal)
    for variant in variants:  # every variant's config is checked before any training starts
        validate_config(config.with_overrides(variant.overrides))
    out = Path(out)
    base_seed = config.train.seed
    total = len(variants) * seeds
    tracker = _progress(total, progress)
    done = 0
    for variant in variants:
        for k in range(seeds):
            run_dir = out / "runs" / _safe(variant.key) / f"seed{k}"
            if not (run_dir / MARKER).is_file():
                run_config = config.with_overrides([*variant.overrides, f"train.seed={base_seed + k}", "train.progress=false"])
                run_training(run_config, run_dir, overwrite=True, progress=False)
            record = run_record(run_dir, task, metric, latency)
            variant.runs.append(record)
            done += 1
            tracker(done, f"{variant.key} seed {k}: {metric} {record['test']:.4f}")
            if on_run is not None:
                on_run(variant.key, k, record)
    rows = [summarize_variant(v) for v in variants]
    return {
        "name": config.name,
        "data": config.data.dataset or config.data.train,
        "task": task,
        "metric": metric,
        "higher_is_better": metric not in ("mae", "rmse", "mse"),
        "inputs": inputs,
        "seeds": seeds,
        "modality_dropout": modality_dropout,
        "epochs": config.train.epochs,
        "variants": rows,
    }


def _safe(key: str) -> str:
    return key.replace(" ", "_").replace("+", "_plus_")


def _progress(total: int, show: bool) -> Callable[[int, str], None]:
    """A callback that prints one line per finished run (a rich progress bar would fight the trainer's logs)."""
    from rich.console import Console

    con = Console(stderr=False, highlight=False)

    def update(done: int, message: str) -> None:
        if show:
            con.print(f"[{done}/{total}] {message}")

    return update
