"""One training run end to end: data -> model -> Lightning fit -> evaluation -> checkpoint directory."""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import lightning as L
import torch

from polyfuse.build import build_model, objective_weights, validate_config
from polyfuse.checkpoint import save_model_dir
from polyfuse.config import Config
from polyfuse.errors import CheckpointError, PolyfuseError
from polyfuse.train.callbacks import EvaluationLines, MetricHistory, RNGStateCallback, checkpoint_callbacks
from polyfuse.train.datamodule import MultimodalDataModule
from polyfuse.tasks import TASKS
from polyfuse.train.metrics import default_monitor, monitor_mode
from polyfuse.train.module import MultimodalLightningModule
from polyfuse.safe_state import load_state
from polyfuse.train.safe_io import SafeCheckpointIO
from polyfuse.train.tracking import check_trackers, finish_tracking, start_tracking

LAST = "last.ckpt"
BEST = "best.ckpt"


@dataclass
class RunResult:
    """What a finished run leaves behind; ``predict(rows)`` loads the saved model (once) and predicts."""

    path: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    config: Config | None = None

    @property
    def model(self) -> Any:
        """The saved model as a ``Predictor`` (loaded from ``path`` on first use)."""
        if getattr(self, "_predictor", None) is None:
            from polyfuse.predictor import Predictor

            self._predictor = Predictor.load(Path(self.path))
        return self._predictor

    def predict(self, rows: Any, **kwargs: Any) -> Any:
        """A DataFrame of predictions (label and class probabilities per task) for a DataFrame or manifest."""
        return self.model.predict(rows, **kwargs)


class ParameterSyncCheck(L.Callback):
    """After training, compares a checksum of the parameters across ranks (DDP / FSDP)."""

    def __init__(self) -> None:
        self.in_sync: bool | None = None
        self.checksums: list[float] = []

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # FSDP: every rank holds a shard; each gathers the full parameters so the checksums can agree
        with full_parameters(trainer), torch.no_grad():
            total = torch.zeros((), dtype=torch.float64, device=pl_module.device)
            for i, p in enumerate(pl_module.model.parameters()):
                total += (p.detach().double() * (1.0 + 1e-3 * (i % 97))).sum()
        gathered = trainer.strategy.all_gather(total)
        values = [float(v) for v in gathered.reshape(-1)]
        self.checksums = values
        self.in_sync = all(abs(v - values[0]) <= 1e-9 * max(1.0, abs(values[0])) for v in values)


def is_sharded(trainer: L.Trainer) -> bool:
    """True when the strategy shards parameters across ranks (FSDP)."""
    from lightning.pytorch.strategies import FSDPStrategy

    return isinstance(trainer.strategy, FSDPStrategy)


def full_parameters(trainer: L.Trainer) -> Any:
    """A context in which the module's parameters are whole on every rank (FSDP); nothing otherwise."""
    import contextlib

    if not is_sharded(trainer):
        return contextlib.nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel.summon_full_params(trainer.strategy.model, writeback=False)


def _model_state(state: dict[str, Any]) -> dict[str, Any]:
    """The ``model.`` entries of a Lightning module's state dict, without the prefix."""
    return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}


def _progress_callbacks(progress: bool) -> list[L.Callback]:
    if not progress:
        return []
    try:
        from lightning.pytorch.callbacks import RichProgressBar

        return [RichProgressBar(leave=True)]
    except Exception:  # rich missing or unusable terminal
        return []


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*IterableDataset.*has .__len__. defined.*")
    warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*")
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")


def check_resumable(out: Path) -> None:
    """CheckpointError unless ``out`` holds what ``--resume`` needs: config.yaml, pipeline/ and a readable last.ckpt."""
    last = out / "checkpoints" / LAST
    if not last.is_file():
        raise CheckpointError(f"{out}: nothing to resume (no checkpoints/{LAST}); start without --resume")
    for name in ("config.yaml", "pipeline"):
        if not (out / name).exists():
            raise CheckpointError(
                f"{out}: cannot resume, {name} is missing from the run directory; start again with --overwrite"
            )
    try:
        load_state(last)
    except CheckpointError as exc:
        raise CheckpointError(f"cannot resume: {exc}; start again with --overwrite") from None
    for stale in last.parent.glob(".*.tmp-*"):  # left by a run killed while it wrote a checkpoint
        stale.unlink(missing_ok=True)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_training(
    config: Config,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    callbacks: Sequence[L.Callback] = (),
) -> RunResult:
    """Train, evaluate and save. ``resume`` continues from ``out/checkpoints/last.ckpt``;
    ``callbacks`` are extra Lightning callbacks (e.g. a pruning callback) added to the Trainer's."""
    from polyfuse.data.pipeline import DataPipeline
    from polyfuse.data.prepare import prepare_data
    from polyfuse.evaluate.report import evaluate_model, load_history, write_report
    from polyfuse.train.devices import check_train_devices
    from polyfuse.train.init import freeze, load_matching_weights

    _quiet_lightning()
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    pipeline = None
    if resume:
        check_resumable(out)
        # the run's own config and fitted pipeline: a refit could differ, and the weights expect these
        config = Config.from_yaml(out / "config.yaml")
        pipeline = DataPipeline.load(out / "pipeline")
    elif ckpt_dir.exists():
        if not overwrite:
            raise PolyfuseError(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it")
        shutil.rmtree(out)
    validate_config(config)
    check_train_devices(config.train)
    check_trackers(config.train)  # a missing optional tracker package fails before any data is read
    cfg_train = config.train
    show = cfg_train.progress if progress is None else progress
    if cfg_train.threads:
        torch.set_num_threads(cfg_train.threads)
    L.seed_everything(cfg_train.seed, workers=True, verbose=False)

    prepared = prepare_data(config, pipeline=pipeline, progress=show)
    config = prepared.config
    pipeline = prepared.pipeline
    specs, task_dims = pipeline.specs(), pipeline.task_dims()
    if not config.tasks and not config.objectives:
        raise PolyfuseError("nothing to learn: give tasks (or --label COLUMN) or pretraining objectives in the config")
    out.mkdir(parents=True, exist_ok=True)
    config.to_yaml(out / "config.yaml")
    if not resume:
        pipeline.save(out / "pipeline")

    model = build_model(config, specs, task_dims)
    if config.init_from and not resume:
        load_matching_weights(model, config.init_from)
    if config.freeze:
        freeze(model, config.freeze)
    from polyfuse.train.features import feature_collator, precompute_features
    from polyfuse.train.targets import class_weights, fit_regression_targets

    # fixed features (features-first encoders, frozen backbones) once per row, from the disk cache when known
    datasets, feature_report = precompute_features(
        model, pipeline, prepared.datasets, mode=cfg_train.feature_cache, progress=show,
        batch_size=max(8, min(64, config.data.eval_batch_size or config.data.batch_size)),
    )
    collate = feature_collator(pipeline, model, datasets)
    fit_regression_targets(model, config.tasks, prepared.datasets["train"])
    weights = class_weights(config.tasks, prepared.datasets["train"], task_dims)
    module = MultimodalLightningModule(
        model, config.tasks, task_dims, cfg_train, objective_weights(config), class_weights=weights
    )
    datamodule = MultimodalDataModule(datasets, collate, config.data, cfg_train.seed)

    has_valid = "valid" in prepared.datasets and len(prepared.datasets["valid"]) > 0
    monitor = cfg_train.monitor or (default_monitor(config.tasks)[0] if has_valid else "train/loss_epoch")
    mode = monitor_mode(monitor)
    checkpoint, checkpointing = checkpoint_callbacks(
        ckpt_dir, monitor, mode, cfg_train.checkpoint_every_n_steps, every_n_epochs=cfg_train.eval_every_n_epochs
    )
    sync = ParameterSyncCheck()
    history = MetricHistory(out / "history.json")
    own_callbacks: list[L.Callback] = [*checkpointing, RNGStateCallback(), history, sync, *_progress_callbacks(show)]
    if not show:
        own_callbacks.append(EvaluationLines(monitor))
    if cfg_train.early_stopping.patience is not None:
        own_callbacks.append(
            L.pytorch.callbacks.EarlyStopping(
                monitor=monitor, mode=mode, patience=cfg_train.early_stopping.patience,
                min_delta=cfg_train.early_stopping.min_delta,
            )
        )
    loggers = start_tracking(config, out, resume=resume)  # train.logger; records the resolved config
    trainer = L.Trainer(
        max_epochs=cfg_train.epochs,
        max_steps=cfg_train.max_steps,
        min_steps=cfg_train.min_steps or None,
        max_time=None if not cfg_train.max_seconds else datetime.timedelta(seconds=float(cfg_train.max_seconds)),
        check_val_every_n_epoch=cfg_train.eval_every_n_epochs,
        accelerator=cfg_train.accelerator,
        devices=cfg_train.devices,
        num_nodes=cfg_train.num_nodes,
        strategy=cfg_train.strategy,
        precision=cfg_train.precision,
        gradient_clip_val=cfg_train.grad_clip,
        accumulate_grad_batches=cfg_train.accumulate,
        deterministic=cfg_train.deterministic,
        callbacks=[*own_callbacks, *callbacks],
        logger=loggers,
        log_every_n_steps=cfg_train.log_every_n_steps,
        enable_progress_bar=bool(show),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        plugins=[SafeCheckpointIO()],
        default_root_dir=str(out),
        use_distributed_sampler=True,
    )
    started = time.perf_counter()
    convex = None
    if cfg_train.solver == "convex":  # a linear model fitted to the optimum; no optimizer steps
        convex = _fit_convex(model, config, datasets, collate, task_dims, weights, monitor, mode)
        print(convex.line(), file=sys.stderr, flush=True)
    else:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_dir / LAST) if resume else None)
    train_seconds = time.perf_counter() - started
    sharded = is_sharded(trainer)
    # FSDP: a collective call on every rank; the full state (on CPU) arrives on rank 0
    gathered = trainer.strategy.lightning_module_state_dict() if sharded else None
    if not trainer.is_global_zero:
        return RunResult(out, {}, config)

    best_path = ckpt_dir / BEST
    if sharded:  # the trained module holds shards: the model to evaluate and save is rebuilt whole
        state = load_state(best_path)["state_dict"] if best_path.is_file() else gathered
        model = build_model(config, specs, task_dims)
        model.load_state_dict(_model_state(state))
    else:
        if best_path.is_file():
            module.load_state_dict(load_state(best_path)["state_dict"])
        model = module.model
    model = model.cpu().eval()
    from polyfuse.train.threshold import tune_thresholds

    thresholds = tune_thresholds(model, config, datasets, collate, monitor)
    evaluation = evaluate_model(model, config, datasets, collate, {t: pipeline.classes(t) for t in config.tasks if TASKS[config.tasks[t].type].has_classes}, out)
    encoders = {name: type(enc).__name__ for name, enc in model.encoders.items()}
    summary = {
        "encoders": encoders,
        "parameters": count_parameters(model),
        "train_seconds": round(train_seconds, 2),
        "epochs_run": trainer.current_epoch,
        "steps_run": int(trainer.global_step),
        "monitor": monitor,
    }
    if feature_report.inputs:
        summary["features"] = feature_report.to_dict()
    if convex is not None:
        summary["convex"] = convex.to_dict()
    if thresholds:
        summary["thresholds"] = thresholds
    if weights:
        summary["class_weights"] = {t: [round(float(v), 4) for v in w] for t, w in weights.items()}
    metrics: dict[str, Any] = {
        "name": config.name,
        "data": config.data.dataset or config.data.train,
        "fusion": config.model.fusion.name,
        **summary,
        **{split: values for split, values in evaluation["splits"].items()},
        "best_score": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
    }
    if "contribution" in evaluation:
        metrics["contribution"] = evaluation["contribution"]
    if "retrieval" in evaluation:  # contrastive / translation objectives: {split: {objective: {direction: ...}}}
        metrics["retrieval"] = evaluation["retrieval"]
    if "matching" in evaluation:  # itm objectives: {split: {objective: {acc, positives, negatives, pairs}}}
        metrics["matching"] = evaluation["matching"]
    if sync.in_sync is not None and len(sync.checksums) > 1:
        metrics["ranks_in_sync"] = sync.in_sync
        metrics["world_size"] = len(sync.checksums)
    for dataset in prepared.datasets.values():  # lazily read rows: the problems found while training
        if hasattr(dataset, "collect_problems"):
            dataset.collect_problems()
    prepared.report.save(out)
    data_summary = prepared.report.summary()
    metrics["data_report"] = data_summary
    save_model_dir(out, model, config, specs, task_dims, pipeline, metrics)
    write_report(out, config, evaluation, history=load_history(out / "history.json"), summary=summary, data_report=data_summary)
    final = {**evaluation["splits"], **{k: metrics[k] for k in ("retrieval", "matching", "best_score") if metrics.get(k) is not None}}
    finish_tracking(loggers, out, final, step=int(trainer.global_step))
    return RunResult(out, metrics, config)


def _fit_convex(
    model: torch.nn.Module, config: Config, datasets: Mapping[str, Any], collate: Any, task_dims: Mapping[str, int],
    weights: Mapping[str, list[float]], monitor: str, mode: str,
) -> Any:
    """``train.solver: convex``: the linear model fitted by scikit-learn on the training rows (``polyfuse.train.convex``)."""
    from polyfuse.evaluate.report import loader_factory
    from polyfuse.train.convex import fit_convex
    from polyfuse.train.ensemble import metric_function

    task_type = next(iter(config.tasks.values())).type if config.tasks else ""
    if not monitor.startswith("valid/"):  # no validation rows: cross-validation scores the task's main metric
        monitor, mode = default_monitor(config.tasks)

    def score(metric: str, preds: Any, labels: Any) -> float:
        return metric_function(task_type, metric)(preds, labels)

    return fit_convex(model.eval(), config, loader_factory(datasets["train"], collate, 256)(), task_dims, weights, monitor, mode, score)


def write_json(path: Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=float))


__all__ = ["run_training", "RunResult", "os"]
