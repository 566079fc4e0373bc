"""`polyfuse tune`: hyperparameter search over any config keys with Optuna (docs/tune.md)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import List, Optional

import typer

from polyfuse.commands._common import user_errors


def register(app: typer.Typer) -> None:
    @app.command("tune", context_settings={"allow_extra_args": True})
    @user_errors
    def tune(
        args: Optional[List[str]] = typer.Argument(
            None, help="RECIPE or CONFIG.yaml (or --data), then key.path=value overrides for every trial."
        ),
        space: Path = typer.Option(..., "--space", help="Search space YAML: dotted key -> {choices: [...]} or {low, high[, log, int, step]}."),
        trials: Optional[int] = typer.Option(None, "--trials", "-n", help="Trials this process runs (default 20, or unbounded with --time-limit)."),
        time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Seconds: no trial starts after it; a running trial trains at most what is left."),
        seed: int = typer.Option(0, "--seed", help="Seed of the TPE sampler."),
        pruner: str = typer.Option("median", "--pruner", help="median | hyperband | threshold | none: stops bad trials after an epoch."),
        prune_threshold: Optional[float] = typer.Option(None, "--prune-threshold", help="With --pruner threshold: stop a trial whose metric is worse than this."),
        metric: Optional[str] = typer.Option(None, "--metric", help="Validation metric to optimise: a key like valid/digit/acc, or acc | f1 | mae | loss ... (default: the run's monitor)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default runs/<name>-tune): trials.csv/.md, search.png, best/."),
        storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL shared by workers (default sqlite:///OUT/study.db)."),
        study_name: Optional[str] = typer.Option(None, "--study-name", help="Study name in the storage (default: the --out folder's name)."),
        keep_trials: bool = typer.Option(False, "--keep-trials", help="Keep every trial's run directory under OUT/trials/ (default: only the best's, in OUT/best)."),
        data: Optional[str] = typer.Option(None, "--data", help="Tune on your own manifest (CSV/TSV/Parquet/JSONL), as `polyfuse train --data`."),
        label: Optional[List[str]] = typer.Option(None, "--label", help="Label column(s) of --data."),
        valid: Optional[str] = typer.Option(None, "--valid", help="With --data: validation manifest."),
        test: Optional[str] = typer.Option(None, "--test", help="With --data: test manifest."),
        task_type: Optional[str] = typer.Option(None, "--task-type", help="With --data: classification | regression | multilabel."),
        preset: str = typer.Option("medium", "--preset", help="With --data: the preset that plans the base run (fast | medium | best)."),
        group: Optional[str] = typer.Option(None, "--group", help="With --data: rows sharing this column's value never straddle splits."),
    ) -> None:
        """Search hyperparameters with Optuna; the best trial's run directory lands in OUT/best."""
        from polyfuse.api import resolve_config
        from polyfuse.errors import PolyfuseError
        from polyfuse.tuning import base_from_plan, run_tune

        items = list(args or [])
        overrides = [a for a in items if "=" in a]
        positional = [a for a in items if "=" not in a]
        if len(positional) > 1:
            raise PolyfuseError(f"expected one recipe or config, got {positional}; overrides look like key.path=value")
        say = typer.echo
        run_metric = metric
        if data:
            if positional:
                raise PolyfuseError("give either a recipe/config or --data, not both")
            if not label:
                raise PolyfuseError("--data needs --label COLUMN (the column to predict)")
            from polyfuse.presets.table import plan_table

            plan = plan_table(data, list(label), preset=preset, valid=valid, test=test, task_type=task_type,
                              metric=metric, group=group)
            base = base_from_plan(plan, say)
            run_metric = None  # the plan's train.monitor holds --metric
        elif positional:
            given = [flag for flag, value in (("--label", label), ("--valid", valid), ("--test", test), ("--task-type", task_type),
                                              ("--group", group), ("--preset", None if preset == "medium" else preset)) if value]
            if given:
                raise PolyfuseError(f"{given[0]} applies to --data TABLE (a recipe or config sets these keys itself)")
            base = resolve_config(positional[0])
        else:
            raise PolyfuseError("nothing to tune: give a recipe (see `polyfuse recipes`), a config file, or --data FILE --label COL")
        if overrides:
            base = base.with_overrides(overrides)
        run_dir = out or Path("runs") / f"{base.name}-tune"
        result = run_tune(base, space, run_dir, trials=trials, time_limit=time_limit, seed=seed, pruner=pruner,
                          prune_threshold=prune_threshold, metric=run_metric, storage=storage,
                          study_name=study_name, keep_trials=keep_trials, say=say)
        typer.echo(f"results: {result.files['md']}, {result.files['csv']}, {result.files['png']}")
        if result.best_trial is None:
            counts = Counter(r["state"].lower() for r in result.trials)
            states = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no trials"
            typer.secho(f"error: no trial completed in study {result.study_name} ({states}); no model kept",
                        fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_params.items())
        typer.echo(f"best: trial {result.best_trial}, {result.metric} {result.best_value:.4f} ({params})")
        if result.best_dir is not None:
            typer.echo(f"model: {result.best_dir}  (polyfuse predict / eval / serve take it)")
