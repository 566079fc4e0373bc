"""`polyfuse benchmark fusion`: which fusion works on this data, how much each input matters, what it costs."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from polyfuse.commands._common import console, print_json, user_errors


def base_config(
    dataset: str | None, recipe: str | None, data: str | None, labels: list[str] | None, valid: str | None, test: str | None
) -> "object":
    """The config every variant starts from: a recipe, a built-in dataset (its ``<name>-fused`` recipe when
    one ships, else inferred inputs) or a user manifest."""
    from polyfuse.api import resolve_config
    from polyfuse.config import Config
    from polyfuse.errors import PolyfuseError
    from polyfuse.recipes import recipe_names

    given = [x for x in (dataset, recipe, data) if x]
    if len(given) != 1:
        raise PolyfuseError("give exactly one of --dataset NAME, --recipe NAME_OR_YAML or --data FILE --label COL")
    if recipe:
        return resolve_config(recipe)
    if data:
        if not labels:
            raise PolyfuseError("--data needs --label COLUMN (the column to predict)")
        from polyfuse.presets.table import plan_table

        # the medium preset's inputs and encoders: frozen features come from the same cache as `train --data`
        return plan_table(data, labels, valid=valid, test=test).config
    import polyfuse.data  # noqa: F401  (registers datasets)
    from polyfuse.registry import DATASETS

    if dataset not in DATASETS.names():
        raise PolyfuseError(f"--dataset: {dataset!r} is not a built-in dataset; allowed: {', '.join(DATASETS.names())}")
    if f"{dataset}-fused" in recipe_names():
        return resolve_config(f"{dataset}-fused")
    return Config.from_dict({"name": dataset, "data": {"dataset": dataset}})


def register(app: typer.Typer) -> None:
    bench = typer.Typer(help="Benchmarks on your data: `polyfuse benchmark fusion`.", no_args_is_help=True)
    app.add_typer(bench, name="benchmark")

    @bench.command("fusion", context_settings={"allow_extra_args": True})
    @user_errors
    def fusion(
        overrides: Optional[List[str]] = typer.Argument(None, help="key.path=value overrides for every run (e.g. train.epochs=5)."),
        dataset: Optional[str] = typer.Option(None, "--dataset", help="A built-in dataset (see `polyfuse datasets`)."),
        recipe: Optional[str] = typer.Option(None, "--recipe", help="A recipe name or config YAML as the base."),
        data: Optional[str] = typer.Option(None, "--data", help="Your own manifest (CSV/TSV/Parquet/JSONL)."),
        label: Optional[List[str]] = typer.Option(None, "--label", help="Label column of --data (the first ranks)."),
        valid: Optional[str] = typer.Option(None, "--valid", help="Validation manifest (default: split from --data)."),
        test: Optional[str] = typer.Option(None, "--test", help="Test manifest (default: split from --data)."),
        fusions: str = typer.Option("all", "--fusions", help="all, or a comma list (e.g. concat,gated,fit)."),
        seeds: int = typer.Option(3, "--seeds", help="Seeds per model; the table shows mean ± std."),
        modality_dropout: float = typer.Option(
            0.0, "--modality-dropout", help="Also train each fusion with this modality dropout (robustness); 0 = off."
        ),
        unimodal: bool = typer.Option(True, "--unimodal/--no-unimodal", help="Train one-input baselines too."),
        latency: bool = typer.Option(True, "--latency/--no-latency", help="Measure eager latency at batch 1."),
        out: Path = typer.Option(Path("runs/benchmark"), "--out", "-o", help="Output folder (runs are reused on rerun)."),
        as_json: bool = typer.Option(False, "--json", help="Print the leaderboard as JSON."),
    ) -> None:
        """Train one-input baselines and every fusion with the same encoders and budget; rank them."""
        from polyfuse.benchmark.fusion import resolve_fusions, run_fusion_benchmark
        from polyfuse.benchmark.report import markdown, write_leaderboard

        config = base_config(dataset, recipe, data, list(label or []), valid, test)
        config = config.with_overrides(list(overrides or []))
        names = resolve_fusions(fusions)
        board = run_fusion_benchmark(
            config, out, fusions=names, seeds=seeds, modality_dropout=modality_dropout,
            unimodal=unimodal, latency=latency, progress=not as_json,
        )
        command = "polyfuse " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["benchmark"] else None
        paths = write_leaderboard(board, out, command)
        if as_json:
            print_json(board)
            return
        con = console()
        con.print(markdown(board, command))
        con.print(f"wrote {paths['md']}, {paths['json']} and {paths['png']}")
