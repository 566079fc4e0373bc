"""`polyfuse train`, `polyfuse eval`, `polyfuse predict`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from polyfuse.commands._common import console, print_json, user_errors


def register(app: typer.Typer) -> None:
    @app.command("train", context_settings={"allow_extra_args": True})
    @user_errors
    def train(
        args: Optional[List[str]] = typer.Argument(
            None, help="RECIPE or CONFIG.yaml, then key.path=value overrides (e.g. model.fusion.name=gated)."
        ),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default runs/<name>)."),
        data: Optional[str] = typer.Option(None, "--data", help="Train on your own manifest (CSV/TSV/Parquet/JSONL), or stream shards://DIR written by `polyfuse data shard`."),
        label: Optional[List[str]] = typer.Option(None, "--label", help="Label column(s) of --data; one task each."),
        valid: Optional[str] = typer.Option(None, "--valid", help="Validation manifest (default: split from --data)."),
        test: Optional[str] = typer.Option(None, "--test", help="Test manifest (default: split from --data)."),
        task_type: Optional[str] = typer.Option(None, "--task-type", help="classification | regression | multilabel (default: inferred)."),
        preset: str = typer.Option("medium", "--preset", help="With --data: fast | medium | best, or a preset YAML file (see polyfuse/presets/)."),
        metric: Optional[str] = typer.Option(None, "--metric", help="With --data: what selection and early stopping optimise: acc | macro_f1 | auroc | mae | rmse."),
        time_limit: Optional[float] = typer.Option(None, "--time-limit", help="With --data: seconds for the whole fit (best: the candidate search)."),
        group: Optional[str] = typer.Option(None, "--group", help="With --data: rows sharing this column's value never straddle splits or folds."),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run in --out."),
        devices: Optional[str] = typer.Option(None, "--devices", help="Devices per node (Lightning), e.g. 2 or auto."),
        num_nodes: Optional[int] = typer.Option(None, "--num-nodes", help="Number of machines (torchrun / SLURM)."),
        strategy: Optional[str] = typer.Option(None, "--strategy", help="auto | ddp | fsdp | ddp_spawn ..."),
        accelerator: Optional[str] = typer.Option(None, "--accelerator", help="auto | cpu | gpu | mps"),
        print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    ) -> None:
        """Train a fused model from a recipe/config, or from your own table with --data/--label."""
        from polyfuse.api import resolve_config
        from polyfuse.errors import PolyfuseError

        from polyfuse.config import ConfigError

        items = list(args or [])
        from polyfuse.train.devices import check_device_options

        check_device_options(accelerator or "auto", strategy or "auto", 1 if devices is None else devices,
                             1 if num_nodes is None else num_nodes)  # before any data is read
        if not data:
            given = [flag for flag, value in (("--metric", metric), ("--time-limit", time_limit), ("--group", group)) if value is not None]
            if preset != "medium":
                given.insert(0, "--preset")
            if given:
                raise ConfigError(f"{given[0]} applies to --data TABLE (a recipe or config sets these keys itself)")
        overrides = [a for a in items if "=" in a]
        positional = [a for a in items if "=" not in a]
        if len(positional) > 1:
            raise PolyfuseError(f"expected one recipe or config, got {positional}; overrides look like key.path=value")
        from polyfuse.data.shards import is_shards

        if data and is_shards(data):  # shards carry their inputs, tasks and fitted pipeline
            if positional or label or valid or test or metric or time_limit is not None or group or preset != "medium":
                raise PolyfuseError(
                    "--data shards://DIR: the shards hold their own inputs, tasks and splits, and presets plan from a table; "
                    "give only key=value overrides (e.g. train.epochs=3 data.num_workers=2)"
                )
            from polyfuse.config import Config

            config = Config.from_dict({"data": {"train": data}}).with_overrides(overrides)
            data = None
        elif data:
            if positional:
                raise PolyfuseError("give either a recipe/config or --data, not both")
            if not label:
                raise PolyfuseError("--data needs --label COLUMN (the column to predict)")
            from polyfuse.presets.table import plan_table

            plan = plan_table(data, list(label), preset=preset, valid=valid, test=test, task_type=task_type,
                              metric=metric, group=group, time_limit=time_limit)
            plan.config = plan.config.with_overrides(overrides)
            config = plan.config
        elif positional:
            config = resolve_config(positional[0], overrides)
        elif resume and out is not None and (out / "config.yaml").is_file():
            from polyfuse.config import Config

            config = Config.from_yaml(out / "config.yaml")
        else:
            raise PolyfuseError("nothing to train: give a recipe (see `polyfuse recipes`), a config file, or --data FILE --label COL")
        flags = {"devices": devices, "num_nodes": num_nodes, "strategy": strategy, "accelerator": accelerator}
        extra = []
        for key, value in flags.items():
            if value is not None:
                extra.append(f"train.{key}={value}")
        if no_progress:
            extra.append("train.progress=false")
        if extra:
            config = config.with_overrides(extra)
        if print_config:
            from polyfuse.build import validate_config

            validate_config(config)
            typer.echo(config.to_yaml())
            return
        from polyfuse.train.runner import run_training

        run_dir = out or Path("runs") / config.name
        if data:
            from polyfuse.train.table_fit import fit_table

            plan.config = config
            result = fit_table(plan, run_dir, resume=resume, overwrite=overwrite, say=lambda m: console().print(m))
        else:
            result = run_training(config, run_dir, resume=resume, overwrite=overwrite)
        if result.metrics:
            _print_summary(result.metrics, run_dir)

    @app.command("eval")
    @user_errors
    def evaluate(
        ckpt: Path = typer.Argument(..., help="A checkpoint directory written by `polyfuse train`."),
        data: Optional[str] = typer.Option(None, "--data", help="A manifest with the label columns (default: the run's test split)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """Evaluate a trained model on its test split or on a manifest."""
        from polyfuse.api import load

        predictor = load(ckpt)
        result = predictor.evaluate(data)
        if as_json:
            print_json(result)
            return
        from rich.table import Table

        table = Table(title=f"{ckpt} on {data or 'its test split'} ({result['rows']} rows)")
        for col in ("task", "metric", "value"):
            table.add_column(col)
        for task, values in result["metrics"].items():
            for metric, value in values.items():
                table.add_row(task, metric, f"{value:.4f}")
        console().print(table)
        if result.get("retrieval"):
            from polyfuse.commands._common import retrieval_table

            console().print(retrieval_table(result["retrieval"], f"retrieval on {data or 'its test split'}"))
        problems = result.get("data_report", {}).get("total", 0)
        if problems:
            console().print(f"{problems} row problem(s): treated per the missing-data policy")

    @app.command("predict")
    @user_errors
    def predict(
        ckpt: Path = typer.Argument(..., help="A checkpoint directory written by `polyfuse train`."),
        data: str = typer.Option(..., "--data", help="Manifest of rows to predict (label columns not needed)."),
        out: Path = typer.Option(Path("predictions.csv"), "--out", "-o", help="Where to write predictions (CSV)."),
        root: Optional[Path] = typer.Option(None, "--root", help="Folder file paths resolve against (default: the manifest's)."),
        explain: bool = typer.Option(
            False, "--explain",
            help="Add <task>:explain:<input> columns: how much each input moved the row's prediction "
            "(one extra pass per input), and fusion_weight:<input> where the fusion weighs its inputs.",
        ),
    ) -> None:
        """Predict every row of a manifest: labels and class probabilities per task."""
        from polyfuse.api import load

        import warnings

        from polyfuse.row_problems import PredictionProblemsWarning

        predictor = load(ckpt)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PredictionProblemsWarning)
            frame = predictor.predict(data, root=root, explain=explain)
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out, index_label="row")
        typer.echo(f"wrote {len(frame)} predictions to {out}")
        for warning in caught:
            if issubclass(warning.category, PredictionProblemsWarning):
                typer.secho(f"warning: {warning.message}", fg=typer.colors.YELLOW, err=True)


def _print_summary(metrics: dict, run_dir: Path) -> None:
    from rich.table import Table

    title = f"{metrics.get('name')} -> {run_dir}"
    if metrics.get("preset"):
        encoders = ", ".join(f"{k}: {v}" for k, v in (metrics.get("encoders") or {}).items())
        chosen = (metrics.get("selection") or {}).get("chosen")
        title += (f"\npreset {metrics['preset']}; fusion {metrics.get('fusion')}; {encoders}"
                  + (f"; chosen candidate {chosen}" if chosen else "") + f"; {metrics.get('total_seconds', 0):.0f} s")
    table = Table(title=title)
    for col in ("split", "task", "metric", "value"):
        table.add_column(col)
    for split in ("valid", "test"):
        for task, values in (metrics.get(split) or {}).items():
            if not isinstance(values, dict):
                continue
            for metric, value in values.items():
                table.add_row(split, task, metric, f"{value:.4f}")
    console().print(table)
    if metrics.get("retrieval", {}).get("test"):
        from polyfuse.commands._common import retrieval_table

        console().print(retrieval_table(metrics["retrieval"]["test"], "retrieval (test split)"))
    console().print(f"report: {run_dir / 'report.md'}")
