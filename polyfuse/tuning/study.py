"""One hyperparameter search: an Optuna study whose trials are ordinary training runs.

Each trial trains ``base`` with the sampled keys set, into ``OUT/trials/<number>/``; the study (in
``--storage``, by default ``sqlite:///OUT/study.db``) is shared by every process started with the
same storage and study name, so several workers add trials to one search. When a process stops
it moves (``keep_trials``: copies) the study's best complete trial to ``OUT/best/``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from polyfuse.config import Config, ConfigError
from polyfuse.errors import MissingPackageError, PolyfuseError
from polyfuse.tuning.space import SearchSpace, load_space

#: trials a process runs when neither ``trials`` nor ``time_limit`` is given
DEFAULT_TRIALS = 20


@dataclass
class TuneResult:
    """The search as it stands when this process finished (every worker's trials)."""

    study_name: str
    metric: str
    direction: str
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_dir: Path | None  # OUT/best: a normal run directory (None: no complete trial, or not on this machine)
    trials: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def model(self) -> Any:
        """The best trial's model as a ``Predictor``."""
        if self.best_dir is None:
            raise PolyfuseError(f"study {self.study_name}: no best model directory here")
        from polyfuse.predictor import Predictor

        return Predictor.load(self.best_dir)


def resolve_metric(config: Config, metric: str | None) -> str:
    """The validation metric to optimise: ``metric`` (a full key like valid/digit/acc, or a metric
    name of the first task such as acc, or loss), else the run's ``train.monitor``, else its default."""
    from polyfuse.tasks import TASKS
    from polyfuse.train.metrics import default_monitor

    if metric is None:
        metric = config.train.monitor or default_monitor(config.tasks)[0]
    elif "/" not in metric:
        if metric == "loss":
            metric = "valid/loss"
        elif not config.tasks:
            raise ConfigError(f"--metric: {metric!r} needs a task; this config has none (use loss or a full key)")
        else:
            name, task = next(iter(config.tasks.items()))
            allowed = TASKS[task.type].metric_names
            if metric not in allowed:
                raise ConfigError(f"--metric: {metric!r} is not a metric of task {name} ({task.type}); allowed: {', '.join(allowed)}, loss")
            metric = f"valid/{name}/{metric}"
    if not metric.startswith("valid/"):
        raise ConfigError(f"--metric: {metric!r}: tune optimises a validation metric (valid/...)")
    return metric


def with_dataset_tasks(config: Config) -> Config:
    """A built-in dataset's inputs and tasks filled in where the config leaves them empty, as
    training does, so the metric and the space are known (and checked) before any trial."""
    if not config.data.dataset or (config.tasks and config.data.inputs) or config.objectives:
        return config
    import polyfuse.data  # noqa: F401  (registers the datasets)
    from polyfuse.registry import DATASETS, RegistryError

    try:
        entry = DATASETS.get(config.data.dataset)
    except RegistryError as exc:
        raise ConfigError(f"data.dataset: {exc}") from None
    prepared = entry.factory(**dict(config.data.dataset_options))
    raw = config.to_dict()
    raw["data"]["inputs"] = raw["data"]["inputs"] or dict(prepared.inputs)
    raw["tasks"] = raw["tasks"] or dict(prepared.tasks)
    return Config.from_dict(raw)


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise MissingPackageError("polyfuse tune needs Optuna: pip install 'polyfuse[tune]' (or pip install optuna)") from None
    return optuna


def _check_single_process(config: Config) -> None:
    train = config.train
    one = train.devices in (1, "1") or (isinstance(train.devices, list) and len(train.devices) == 1)
    if not one or train.num_nodes != 1 or train.strategy not in ("auto", "single_device"):
        raise ConfigError("tune trains each trial in this process on one device: set train.devices=1, "
                          "train.num_nodes=1, train.strategy=auto (run more workers for more devices)")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (POSIX); workers sharing OUT take turns at moving the best model."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: one worker per OUT
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class OutOfTime(RuntimeError):
    """A trial the time limit cut before it was ever scored: it fails, the search ends normally."""


class Search:
    """The parts of one search that the objective, the per-trial callback and the end share."""

    def __init__(self, base: Config, space: SearchSpace, out: Path, metric: str, *, keep_trials: bool,
                 deadline: float | None, say: Callable[[str], None]) -> None:
        self.base, self.space, self.out, self.metric = base, space, out, metric
        self.keep_trials, self.deadline, self.say = keep_trials, deadline, say
        self.trials_dir = out / "trials"
        self.ran = 0  # trials this process started

    # ------------------------------------------------------------------ one trial
    def objective(self, trial: Any) -> float:
        optuna = _optuna()
        from polyfuse.train.runner import run_training
        from polyfuse.tuning.pruning import PruningCallback

        self.ran += 1
        first = self.ran == 1
        params = self.space.suggest(trial)
        config = self.space.apply(self.base, params)
        extra = []
        if self.deadline is not None:  # a trial started near the end trains only for what is left
            left = max(1.0, self.deadline - time.monotonic())
            limit = min(left, config.train.max_seconds or left)
            extra.append(f"train.max_seconds={limit:.1f}")
        if extra:
            config = config.with_overrides(extra)
        run_dir = self.trials_dir / str(trial.number)
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        trial.set_user_attr("host", socket.gethostname())
        try:
            result = run_training(config, run_dir, overwrite=True, progress=False,
                                  callbacks=[PruningCallback(trial, self.metric)])
        except optuna.TrialPruned as exc:
            trial.set_user_attr("pruned", str(exc))
            self._drop(run_dir)
            raise
        except PolyfuseError as exc:
            self._drop(run_dir)
            raise _retold(exc, f"trial {trial.number} ({_shown(params)}): {exc}") from None
        except RuntimeError as exc:
            trial.set_user_attr("error", str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
            self._drop(run_dir)
            if first:  # the very first trial of this process: a broken base run, not an unlucky trial
                raise PolyfuseError(f"trial {trial.number} ({_shown(params)}) failed: {exc}") from exc
            raise
        value = result.metrics.get("best_score")
        if value is None and self.deadline is not None and time.monotonic() >= self.deadline:
            self._drop(run_dir)
            trial.set_user_attr("error", "stopped by the time limit before its first validation")
            raise OutOfTime(f"trial {trial.number}: stopped by the time limit before its first validation")
        if value is None:
            self._drop(run_dir)
            raise PolyfuseError(f"trial {trial.number}: no value of {self.metric} was recorded: the run never validated "
                                f"(it needs a validation split, data.split.valid, and train.eval_every_n_epochs="
                                f"{config.train.eval_every_n_epochs} <= train.epochs={config.train.epochs})")
        return float(value)

    def _drop(self, run_dir: Path) -> None:
        if not self.keep_trials:
            shutil.rmtree(run_dir, ignore_errors=True)

    # ------------------------------------------------------------------ after each trial
    def after_trial(self, study: Any, trial: Any) -> None:
        """One progress line; the directories of finished trials that are not the best go (unless kept)."""
        best = best_trial(study)
        value = trial.value if trial.value is not None else _last(trial)
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete else 0.0
        best_text = f"best {_num(best.value)} (trial {best.number})" if best is not None else "best -"
        self.say(f"trial {trial.number}  {trial.state.name.lower():8s}  {self.metric} {_num(value)}  {best_text}  {seconds:.1f} s")
        self.tidy(study)

    def tidy(self, study: Any) -> None:
        if self.keep_trials or not self.trials_dir.is_dir():
            return
        # finished trials first, the best second: a trial that ends in between is then never taken for a worse one
        finished = {t.number: t.state.is_finished() for t in study.get_trials(deepcopy=False)}
        best = best_trial(study)
        for path in self.trials_dir.iterdir():
            if not path.name.isdigit():
                continue
            number = int(path.name)
            if finished.get(number) and (best is None or number != best.number):
                shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------------ the end
    def keep_best(self, study: Any) -> Path | None:
        """OUT/best: the study's best complete trial, moved (or copied) there; None without one here."""
        best = best_trial(study)
        if best is None:
            return None
        target, marker = self.out / "best", self.out / "best.json"
        with _locked(self.out / ".tune.lock"):
            if marker.is_file() and (target / "COMPLETE").is_file():
                if json.loads(marker.read_text()).get("trial") == best.number:
                    return target
            source = self.trials_dir / str(best.number)
            if not (source / "COMPLETE").is_file():
                where = best.user_attrs.get("run_dir", "?")
                self.say(f"best trial {best.number} ran in {where} on {best.user_attrs.get('host', '?')}: not found under {self.trials_dir}")
                return None
            staging = self.out / f".best-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            if self.keep_trials:
                shutil.copytree(source, staging)
            else:
                source.rename(staging)
            if target.exists():
                old = self.out / f".old-best-{os.getpid()}"
                target.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            staging.rename(target)
            marker.write_text(json.dumps({"trial": best.number, "value": best.value, "metric": self.metric,
                                          "params": best.params}, indent=2, default=str))
        self.tidy(study)
        return target


def _claim(out: Path, name: str) -> None:
    """OUT/tune.json names the study whose trials live in OUT; another study there would mix trial numbers."""
    path = out / "tune.json"
    if path.is_file():
        known = json.loads(path.read_text()).get("study")
        if known != name:
            raise ConfigError(f"{out} holds the trials of study {known!r}, not {name!r}: use another --out, or --study-name {known}")
        return
    path.write_text(json.dumps({"study": name}) + "\n")


def best_trial(study: Any) -> Any | None:
    """The best complete trial, or None."""
    optuna = _optuna()
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return None
    return study.best_trial


def _last(trial: Any) -> float | None:
    steps = trial.intermediate_values
    return steps[max(steps)] if steps else None


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else str(value)


def _retold(exc: PolyfuseError, message: str) -> PolyfuseError:
    """``exc``'s kind of error with ``message`` (a plain PolyfuseError when that kind takes other arguments)."""
    try:
        return type(exc)(message)
    except TypeError:
        return PolyfuseError(message)


def _shown(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def open_study(out: Path, study_name: str, storage: str | None, metric: str, direction: str, pruner: Any) -> Any:
    """The study (created, or loaded when it exists); ConfigError when it optimises something else."""
    optuna = _optuna()
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    try:
        study = optuna.create_study(storage=url, study_name=study_name, direction=direction, pruner=pruner,
                                    load_if_exists=True)
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"--storage {url!r}: {exc}") from None
    known = study.user_attrs.get("metric")
    if known is None and not study.trials:
        study.set_user_attr("metric", metric)
    elif known is not None and known != metric:
        raise ConfigError(f"study {study_name!r} optimises {known}, not {metric}; pick another --study-name or --metric {known}")
    if study.direction.name.lower() != direction:
        raise ConfigError(f"study {study_name!r} is set to {study.direction.name.lower()}, but {metric} should {direction}")
    return study


def run_tune(
    base: Config,
    space: SearchSpace | str | Path | Mapping[str, Any],
    out: str | Path,
    *,
    trials: int | None = None,
    time_limit: float | None = None,
    seed: int = 0,
    pruner: str = "median",
    prune_threshold: float | None = None,
    metric: str | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    keep_trials: bool = False,
    say: Callable[[str], None] | None = None,
) -> TuneResult:
    """Search ``space`` around ``base``: this process adds ``trials`` trials (or runs until
    ``time_limit`` seconds), then writes trials.csv / trials.md / search.png and OUT/best."""
    optuna = _optuna()
    from polyfuse.train.metrics import monitor_mode
    from polyfuse.tuning.pruning import make_pruner
    from polyfuse.tuning.report import trial_rows, write_results

    say = say or (lambda message: None)
    out = Path(out)
    space = space if isinstance(space, SearchSpace) else load_space(space)
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials: must be at least 1, got {trials}")
    if time_limit is not None and time_limit <= 0:
        raise ConfigError(f"--time-limit: must be > 0 seconds, got {time_limit}")
    if trials is None and time_limit is None:
        trials = DEFAULT_TRIALS
    base = with_dataset_tasks(base)
    monitor = resolve_metric(base, metric)
    base = base.with_overrides([f"train.monitor={monitor}", "train.progress=false"])
    _check_single_process(base)
    space.check(base)  # every key and value through the config's own validation, before any training
    direction = "maximize" if monitor_mode(monitor) == "max" else "minimize"
    prune = make_pruner(pruner, direction, prune_threshold)
    out.mkdir(parents=True, exist_ok=True)
    name = study_name or out.resolve().name
    _claim(out, name)
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = open_study(out, name, storage, monitor, direction, prune)
        # a second worker (or a later run) on the same study must not redraw the first one's trials
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
        deadline = time.monotonic() + time_limit if time_limit else None
        search = Search(base, space, out, monitor, keep_trials=keep_trials, deadline=deadline, say=say)
        try:
            study.optimize(search.objective, n_trials=trials, timeout=time_limit, catch=(RuntimeError,),
                           callbacks=[search.after_trial])
        finally:
            best_dir = search.keep_best(study)
            best = best_trial(study)
            states: dict[str, int] = {}
            for t in study.get_trials(deepcopy=False):
                states[t.state.name] = states.get(t.state.name, 0) + 1
            summary = {
                "study": name, "metric": monitor, "direction": direction, "states": states,
                "best_trial": best.number if best else None, "best_value": best.value if best else None,
                "best_params": dict(best.params) if best else {}, "best_dir": str(best_dir) if best_dir else None,
            }
            files = write_results(study, out, summary)
    finally:
        optuna.logging.set_verbosity(previous)
    return TuneResult(
        study_name=name, metric=monitor, direction=direction,
        best_trial=summary["best_trial"], best_value=summary["best_value"], best_params=summary["best_params"],
        best_dir=best_dir, trials=trial_rows(study), files=files,
    )


#: validation share tune uses where a table preset chose cross-validation (tune scores one split)
TABLE_VALID_FRACTION = 0.2


def base_from_plan(plan: Any, say: Callable[[str], None] | None = None) -> Config:
    """The run a table preset planned (``polyfuse train --data``), as the base of a search: one
    model per trial, scored on a validation split (a preset's cross-validation becomes a split)."""
    config: Config = plan.config
    if getattr(plan, "cv_folds", 0):
        if say:
            say(f"tune scores each trial on one validation split ({TABLE_VALID_FRACTION:.0%} of the rows), "
                f"not the preset's {plan.cv_folds}-fold cross-validation")
        config = config.with_overrides([f"data.split.valid={TABLE_VALID_FRACTION}"])
    return config
