"""The Python API: ``polyfuse.fit``, ``polyfuse.load`` and ``polyfuse.tune``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:
    import pandas as pd

    from polyfuse.tuning import TuneResult

from polyfuse.config import Config, ConfigError
from polyfuse.predictor import Predictor
from polyfuse.train.runner import RunResult


def resolve_config(source: str | Path | Config | Mapping[str, Any], overrides: Sequence[str] = ()) -> Config:
    """A Config from a recipe name, a YAML path, a dict or a Config, with dotted overrides."""
    from polyfuse.recipes import load_recipe

    if isinstance(source, Config):
        config = source
    elif isinstance(source, Mapping):
        config = Config.from_dict(dict(source))
    else:
        config = load_recipe(str(source))
    return config.with_overrides(list(overrides)) if overrides else config


def fit(
    config: "str | Path | Config | Mapping[str, Any] | pd.DataFrame",
    *,
    label: str | Sequence[str] | None = None,
    preset: str = "medium",
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    valid: str | None = None,
    test: str | None = None,
    metric: str | None = None,
    group: str | None = None,
    time_limit: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
) -> RunResult:
    """Train a model; returns the run (``.path``, ``.metrics``, ``.predict(rows)``).

    With ``label``, ``config`` is the user's table (a manifest path or a pandas DataFrame whose
    image / audio / sequence cells are file paths) and ``preset`` (fast | medium | best) decides
    the rest, as ``polyfuse train --data TABLE --label COL`` does. Otherwise ``config`` is a recipe
    name, YAML file, dict or Config. ``out`` defaults to ``runs/<name>``.
    """
    from polyfuse.train.runner import run_training

    if label is not None:
        from polyfuse.presets.table import plan_table
        from polyfuse.train.table_fit import fit_table

        labels = [label] if isinstance(label, str) else list(label)
        plan = plan_table(config, labels, preset=preset, valid=valid, test=test, metric=metric, group=group,
                          time_limit=time_limit)  # type: ignore[arg-type]
        if overrides:
            plan.config = plan.config.with_overrides(list(overrides))
        frame = config if _is_frame(config) else None
        run_dir = Path(out) if out is not None else Path("runs") / plan.config.name
        return fit_table(plan, run_dir, frame=frame, resume=resume, overwrite=overwrite, progress=progress)  # type: ignore[arg-type]
    if _is_frame(config):
        raise ConfigError("fit: a DataFrame needs label=COLUMN (the column to predict)")
    resolved = resolve_config(config, overrides)  # type: ignore[arg-type]
    run_dir = Path(out) if out is not None else Path("runs") / resolved.name
    return run_training(resolved, run_dir, resume=resume, overwrite=overwrite, progress=progress)


def _is_frame(value: Any) -> bool:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        return False
    return isinstance(value, pd.DataFrame)


def load(path: str | Path) -> Predictor:
    """Load a trained model from its checkpoint directory (never unpickles)."""
    return Predictor.load(Path(path))


def tune(
    config: str | Path | Config | Mapping[str, Any],
    space: str | Path | Mapping[str, Any],
    *,
    label: str | Sequence[str] | None = None,
    out: str | Path | None = None,
    trials: int | None = None,
    time_limit: float | None = None,
    seed: int = 0,
    pruner: str = "median",
    prune_threshold: float | None = None,
    metric: str | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    keep_trials: bool = False,
    overrides: Sequence[str] = (),
    preset: str = "medium",
    valid: str | None = None,
    test: str | None = None,
    task_type: str | None = None,
    group: str | None = None,
    say: Callable[[str], None] | None = None,
) -> "TuneResult":
    """Hyperparameter search with Optuna, as ``polyfuse tune`` (see docs/tune.md).

    ``config`` is a recipe, YAML file, dict or Config, or with ``label`` the user's table (a manifest
    path; the preset plans the run as ``fit`` does). ``space`` maps dotted config keys to choices or
    ranges. Returns ``.best_value``, ``.best_params``, ``.best_dir`` (``out/best``, a normal run
    directory) and ``.model``; ``out`` defaults to ``runs/<name>-tune``.
    """
    from polyfuse.tuning import base_from_plan, run_tune

    if label is not None:
        from polyfuse.presets.table import plan_table

        if _is_frame(config):
            raise ConfigError("tune: give the table as a file path (a DataFrame is not supported here)")
        labels = [label] if isinstance(label, str) else list(label)
        plan = plan_table(config, labels, preset=preset, valid=valid, test=test, task_type=task_type,  # type: ignore[arg-type]
                          metric=metric, group=group)
        base = base_from_plan(plan, say)
        metric = None  # the plan's train.monitor already holds it
    else:
        base = resolve_config(config)
    if overrides:
        base = base.with_overrides(list(overrides))
    run_dir = Path(out) if out is not None else Path("runs") / f"{base.name}-tune"
    return run_tune(base, space, run_dir, trials=trials, time_limit=time_limit, seed=seed, pruner=pruner,
                    prune_threshold=prune_threshold, metric=metric, storage=storage, study_name=study_name,
                    keep_trials=keep_trials, say=say)
