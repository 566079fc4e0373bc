"""Experiment tracking: the Lightning loggers named by ``train.logger`` and what a run records in them.

``start_tracking`` builds the loggers (TensorBoard, CSV, MLflow, W&B) and records the resolved
config as flattened hyperparameters; Lightning then logs every epoch's metrics to them.
``finish_tracking`` adds the end-of-run evaluation under ``final/`` and links the model directory
(MLflow: a ``polyfuse.run_dir`` tag plus the model files as artifacts under ``model/``).
Only rank 0 talks to a tracker. ``tracking.json`` in the run directory remembers the MLflow run id
and the W&B id, so ``--resume`` continues the same tracked run.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import time
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from polyfuse.config import Config, TrainConfig
from polyfuse.errors import PolyfuseError

STATE_FILE = "tracking.json"
#: The model directory goes up as MLflow / W&B artifacts whole when it is at most this big ...
MAX_ARTIFACT_BYTES = 100 * 2**20
#: ... else only its files up to this size (config, pipeline, metrics, report, plots; not the weights).
SMALL_FILE_BYTES = 2**20
#: Run-directory entries that are training state or tracker data, never uploaded as model artifacts.
NOT_ARTIFACTS = {"checkpoints", "tensorboard", "logs", "mlruns", "mlartifacts", "wandb", "mlflow.db", STATE_FILE}
#: Optional trackers: (module to import, extra that installs it).
PACKAGES = {"mlflow": ("mlflow", "polyfuse[tracking]"), "wandb": ("wandb", "polyfuse[wandb]")}
DEFAULT_EXPERIMENT = "polyfuse"
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_/. -]+")


class ThrottledTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger, flushing its event file at most once a second.

    Lightning calls ``save()`` after every ``log_metrics``: a flush plus two file-system checks, about
    1.3 ms each, several times an epoch (a few percent of a small model's epoch). Events logged in
    between stay queued in the writer, which flushes them itself within ``flush_secs`` and at
    ``finalize``.
    """

    FLUSH_EVERY_S = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("flush_secs", 10)
        super().__init__(*args, **kwargs)
        self._flushed_at = -math.inf

    @rank_zero_only
    def save(self) -> None:
        now = time.monotonic()
        if now - self._flushed_at < self.FLUSH_EVERY_S:
            return
        self._flushed_at = now
        super().save()


def check_trackers(train: TrainConfig) -> None:
    """PolyfuseError (one line with the pip command) when a tracker named in ``train.logger`` is not installed."""
    for name in train.logger_names():
        if name not in PACKAGES:
            continue
        module, extra = PACKAGES[name]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise PolyfuseError(f"train.logger: {name!r} needs the {module} package, which is not installed: pip install {extra}")


def default_tracking_uri(out: Path) -> str:
    """MLflow store under the run directory: ``sqlite:///<out>/mlflow.db``, or ``file:<out>/mlruns`` without SQLAlchemy.

    MLflow 3 refuses file stores unless ``MLFLOW_ALLOW_FILE_STORE`` is set; the file fallback sets it
    (for this process) because mlflow-skinny alone does not bring the SQL store's packages.
    """
    out = Path(out).resolve()
    if importlib.util.find_spec("sqlalchemy") is not None and importlib.util.find_spec("alembic") is not None:
        return f"sqlite:///{out / 'mlflow.db'}"
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (out / "mlruns").as_uri()


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b.c": value}``; lists and other non-scalars as JSON text, None as ``"null"``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name))
        elif value is None:
            flat[name] = "null"
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return {_KEY_CHARS.sub("_", k): v for k, v in flat.items()}


def numeric_leaves(data: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """Finite numbers of a nested mapping as ``{"<prefix>/a/b": value}`` (booleans, lists and text are left out)."""
    found: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}/{_KEY_CHARS.sub('_', str(key))}"
        if isinstance(value, Mapping):
            found.update(numeric_leaves(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)):
            found[name] = float(value)
    return found


def _is_rank_zero() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0


def _resume_version(logs: Path) -> str:
    n = 1
    while (logs / f"resume-{n}").exists():
        n += 1
    return f"resume-{n}"


def _read_state(out: Path) -> dict[str, Any]:
    try:
        state = json.loads((out / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _quiet_mlflow() -> None:
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _mlflow_logger(train: TrainConfig, out: Path, previous: Mapping[str, Any] | None) -> tuple[Logger, dict[str, Any], bool]:
    """(logger with its run created, state to remember, whether it continues an earlier run)."""
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    _quiet_mlflow()
    uri = train.tracking_uri or default_tracking_uri(out)
    experiment = train.experiment or DEFAULT_EXPERIMENT
    try:
        client = MlflowClient(uri)
        run_id = None
        if previous and previous.get("tracking_uri") == uri and previous.get("run_id"):
            try:
                client.get_run(previous["run_id"])
                run_id = str(previous["run_id"])
                client.update_run(run_id, status="RUNNING")
            except MlflowException:
                warnings.warn(f"MLflow run {previous['run_id']} is gone from {uri}; the resumed run logs to a new one")
        if run_id is None and client.get_experiment_by_name(experiment) is None:
            # created here (not by Lightning) to put its artifacts under the run directory with the default store
            location = None if train.tracking_uri else (out.resolve() / "mlartifacts").as_uri()
            client.create_experiment(experiment, artifact_location=location)
        logger = MLFlowLogger(
            experiment_name=experiment, tracking_uri=uri, run_name=out.resolve().name, run_id=run_id,
            tags={"polyfuse.run_dir": str(out.resolve())},
        )
        new_id = logger.run_id  # creates the run now, so a bad store fails before training
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PolyfuseError(f"train.tracking_uri={uri}: MLflow cannot start a run: {first}") from None
    return logger, {"run_id": new_id, "tracking_uri": uri, "experiment": experiment}, run_id is not None


def _wandb_logger(train: TrainConfig, out: Path, previous: Mapping[str, Any] | None) -> tuple[Logger, dict[str, Any], bool]:
    """Offline unless ``WANDB_MODE=online``; files under ``<out>/wandb``; a resumed run keeps its id."""
    from lightning.pytorch.loggers import WandbLogger

    run_id = str(previous["id"]) if previous and previous.get("id") else uuid.uuid4().hex[:12]
    offline = os.environ.get("WANDB_MODE", "offline").lower() != "online"
    logger = WandbLogger(
        name=out.resolve().name, save_dir=str(out), offline=offline, id=run_id,
        project=train.experiment or DEFAULT_EXPERIMENT,
    )
    return logger, {"id": run_id, "offline": offline}, bool(previous and previous.get("id"))


def start_tracking(config: Config, out: Path, *, resume: bool = False) -> list[Logger]:
    """The loggers of ``config.train.logger``, with the resolved config recorded as hyperparameters (rank 0).

    TensorBoard writes ``<out>/tensorboard``; CSV ``<out>/logs/metrics.csv`` (a resumed run
    ``logs/resume-<n>/``, since Lightning's CSV logger would replace the file); MLflow and W&B as
    in ``_mlflow_logger`` / ``_wandb_logger``.
    """
    out = Path(out)
    train = config.train
    check_trackers(train)
    rank_zero = _is_rank_zero()
    previous = _read_state(out) if resume else {}
    loggers: list[Logger] = []
    state: dict[str, Any] = {}
    continued: set[int] = set()
    for name in train.logger_names():
        if name == "tensorboard":
            loggers.append(ThrottledTensorBoardLogger(out, name="tensorboard", version="", default_hp_metric=False))
        elif name == "csv":
            loggers.append(CSVLogger(out, name="logs", version=_resume_version(out / "logs") if resume else ""))
        elif rank_zero:  # remote trackers exist on rank 0 only (their stores are not safe to open from every rank)
            build = _mlflow_logger if name == "mlflow" else _wandb_logger
            logger, state[name], again = build(train, out, previous.get(name))
            if again:
                continued.add(len(loggers))
            loggers.append(logger)
    if not rank_zero:
        return loggers
    if state:
        out.mkdir(parents=True, exist_ok=True)
        (out / STATE_FILE).write_text(json.dumps(state, indent=2))
    params = {**flatten(config.to_dict()), "run_dir": str(out.resolve())}
    for i, logger in enumerate(loggers):
        logged = params
        if i in continued and _is_mlflow(logger):  # MLflow params are write-once: add only what is new
            known = logger.experiment.get_run(logger.run_id).data.params
            logged = {k: v for k, v in params.items() if k not in known}
        if logged:
            logger.log_hyperparams(logged)
            logger.save()
    return loggers


def _is_mlflow(logger: Logger) -> bool:
    return type(logger).__name__ == "MLFlowLogger"


def _is_wandb(logger: Logger) -> bool:
    return type(logger).__name__ == "WandbLogger"


def model_files(out: Path) -> tuple[list[Path], bool]:
    """(files of the model directory to upload, whether that is all of them): see ``MAX_ARTIFACT_BYTES``."""
    files = sorted(
        p for p in Path(out).rglob("*")
        if p.is_file() and p.relative_to(out).parts[0] not in NOT_ARTIFACTS and not p.name.startswith(".")
    )
    if sum(p.stat().st_size for p in files) <= MAX_ARTIFACT_BYTES:
        return files, True
    return [p for p in files if p.stat().st_size <= SMALL_FILE_BYTES], False


@rank_zero_only
def finish_tracking(loggers: list[Logger], out: Path, final: Mapping[str, Any], *, step: int) -> None:
    """Log the end-of-run evaluation as ``final/<split>/<task>/<metric>``, link the model directory, close the runs."""
    out = Path(out)
    values = numeric_leaves(final, "final")
    files, complete = model_files(out) if any(_is_mlflow(lg) or _is_wandb(lg) for lg in loggers) else ([], True)
    for logger in loggers:
        if values:
            logger.log_metrics(values, step=step)
        if _is_mlflow(logger):
            client, run_id = logger.experiment, logger.run_id
            for path in files:
                parent = path.relative_to(out).parent
                client.log_artifact(run_id, str(path), "model" if parent == Path(".") else f"model/{parent.as_posix()}")
            client.set_tag(run_id, "polyfuse.artifacts", "complete" if complete else f"files up to {SMALL_FILE_BYTES} bytes")
        elif _is_wandb(logger):
            _wandb_artifact(logger, out, files)
        logger.save()
        logger.finalize("success")
        if _is_wandb(logger):
            logger.experiment.finish()


def _wandb_artifact(logger: Logger, out: Path, files: list[Path]) -> None:
    import wandb

    run = logger.experiment
    run.summary["run_dir"] = str(out.resolve())
    try:
        artifact = wandb.Artifact(f"model-{run.id}", type="model")
        for path in files:
            artifact.add_file(str(path), name=path.relative_to(out).as_posix())
        run.log_artifact(artifact)
    except Exception as exc:  # the run and its metrics are complete; an artifact problem must not fail it
        warnings.warn(f"W&B: the model directory was not logged as an artifact ({exc}); it stays in {out}")


__all__ = [
    "check_trackers", "default_tracking_uri", "finish_tracking", "flatten", "model_files", "numeric_leaves",
    "start_tracking", "STATE_FILE",
]
