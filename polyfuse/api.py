"""The Python API: ``polyfuse.fit`` and ``polyfuse.load``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    import pandas as pd

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
