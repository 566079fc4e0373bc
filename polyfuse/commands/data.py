"""`polyfuse data inspect`: look at a manifest before training on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from polyfuse.commands._common import console, print_json, user_errors


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(
        help="Look at your data: columns and their inferred roles, label balance, unreadable files.",
        no_args_is_help=True,
    )

    @data_app.command("inspect")
    @user_errors
    def inspect(
        file: Path = typer.Argument(..., help="Manifest: .csv .tsv .parquet .jsonl (one row per example)."),
        label: Optional[List[str]] = typer.Option(None, "--label", "-l", help="Label column (repeat for several)."),
        root: Optional[Path] = typer.Option(None, "--root", help="Folder that file paths resolve against (default: the manifest's folder)."),
        allow_outside_root: bool = typer.Option(False, "--allow-outside-root", help="Allow paths and symlinks that leave --root."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
        strict: bool = typer.Option(False, "--strict", help="Exit with status 1 when problems are found."),
    ) -> None:
        """Infer each column's role, count label classes and check every file the manifest names."""
        from polyfuse.data.inspect import inspect_manifest, render_inspection

        result = inspect_manifest(file, root=root, labels=list(label or []), allow_outside_root=allow_outside_root)
        if as_json:
            print_json(result)
        else:
            render_inspection(result, console())
        if strict and result["problems"]:
            raise typer.Exit(1)

    @data_app.command("shard")
    @user_errors
    def shard(
        file: Path = typer.Argument(..., help="Manifest (.csv .tsv .parquet .jsonl), or a config YAML whose data.train is one."),
        out: Path = typer.Option(..., "--out", "-o", help="Folder to write the shards, the fitted pipeline and the data report into."),
        label: Optional[List[str]] = typer.Option(None, "--label", "-l", help="Label column (repeat for several); with a manifest."),
        root: Optional[Path] = typer.Option(None, "--root", help="Folder that file paths resolve against (default: the manifest's folder)."),
        workers: int = typer.Option(1, "--workers", "-w", help="Processes decoding and writing shards in parallel."),
        rows_per_shard: int = typer.Option(2000, "--rows-per-shard", help="Rows per tar shard."),
        fit_rows: Optional[int] = typer.Option(None, "--fit-rows", help="Fit the pipeline on a seeded sample of this many training rows (default: all)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace shards already in --out."),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted sharding of --out (its config and pipeline, its finished shards)."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
        overrides: Optional[List[str]] = typer.Argument(None, help="key.path=value overrides (e.g. data.missing=skip data.split.valid=0.05)."),
    ) -> None:
        """Write a manifest's rows (and the bytes of the files they name) as webdataset tar shards.

        Splits are carved as training would carve them; the pipeline is fitted on the training
        rows and stored with the shards; problems go to OUT/data_report.md. Train on them with
        `polyfuse train --data shards://OUT`.
        """
        from polyfuse.data.shard_writer import write_shards

        config = shard_config(file, list(label or []), root, list(overrides or []))
        if fit_rows is not None:
            config = config.with_overrides([f"data.fit_rows={fit_rows}"])
        summary = write_shards(
            config, out, workers=workers, rows_per_shard=rows_per_shard, overwrite=overwrite, resume=resume,
            progress=not no_progress,
        )
        splits = ", ".join(f"{s} {v['rows']} rows in {v['shards']} shard(s)" for s, v in summary["splits"].items())
        problems = summary["problems"].get("total", 0)
        console().print(
            f"wrote {summary['rows']} rows to {out}: {splits}; {summary['rows_per_s']} rows/s with {workers} worker(s); "
            f"{problems} problem(s) (see {out / 'data_report.md'})"
        )

    app.add_typer(data_app, name="data")


def shard_config(file: Path, labels: list[str], root: Path | None, overrides: list[str]) -> Any:
    """The config to shard with: a YAML config as is, or a manifest with one task per --label column."""
    from polyfuse.config import Config, ConfigError

    if file.suffix.lower() in (".yaml", ".yml"):
        if labels:
            raise ConfigError("--label: a config file names its own tasks")
        config = Config.from_yaml(file, overrides)
    else:
        if not labels:
            raise ConfigError("--label: give the label column(s) of the manifest")
        from polyfuse.data.manifest import read_manifest
        from polyfuse.data.schema import infer_task_type

        frame = read_manifest(file)
        absent = [c for c in labels if c not in frame.columns]
        if absent:
            raise ConfigError(f"--label: column {absent[0]!r} not in {file}; columns present: {', '.join(map(str, frame.columns))}")
        tasks = {c: {"column": c, "type": infer_task_type(frame[c])} for c in labels}
        config = Config.from_dict({"data": {"train": str(file)}, "tasks": tasks}).with_overrides(overrides)
    if root is not None:
        config = config.with_overrides([f"data.root={root}"])
    return config
