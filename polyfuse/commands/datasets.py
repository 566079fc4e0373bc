"""`polyfuse datasets`: the built-in datasets, whether their files are installed, their split sizes."""

from __future__ import annotations

from typing import Any, Optional

import typer

from polyfuse.commands._common import console, print_json, user_errors


def _counts_text(counts: dict[str, int] | None) -> str:
    if not counts:
        return "-"
    return " / ".join(f"{split} {n}" for split, n in counts.items())


def _table(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="polyfuse built-in datasets")
    for col in ("name", "modalities", "tasks", "license", "size", "installed", "counts"):
        table.add_column(col)
    for r in rows:
        installed = "[green]yes[/]" if r["installed"] else f"[red]no[/]: {'; '.join(r['install'] or [])}"
        table.add_row(
            r["name"],
            ", ".join(r["modalities"]),
            ", ".join(r["tasks"]) or "-",
            r["license"],
            r["size"],
            installed,
            _counts_text(r["counts"]),
        )
    return table


def register(app: typer.Typer) -> None:
    @app.command("datasets")
    @user_errors
    def datasets(
        names: Optional[list[str]] = typer.Argument(None, help="Only these datasets (default: all)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
        prepare: bool = typer.Option(
            False, "--prepare", help="Prepare the datasets (once; cached) and show their counts."
        ),
    ) -> None:
        """List the built-in datasets; with --prepare, build their manifests (cache: $POLYFUSE_CACHE)."""
        from polyfuse.data.datasets import dataset_names, describe_dataset
        from polyfuse.registry import DATASETS, RegistryError

        selected = list(names) if names else dataset_names()
        for name in selected:
            try:
                DATASETS.get(name)
            except RegistryError as exc:
                raise typer.BadParameter(str(exc), param_hint="NAMES") from None
        rows = [describe_dataset(name, prepare=prepare) for name in selected]
        if as_json:
            print_json(rows)
        else:
            console().print(_table(rows))
            for r in rows:
                if r["error"]:
                    typer.secho(f"{r['name']}: {r['error']}", fg=typer.colors.RED, err=True)
        if any(r["error"] for r in rows):
            raise typer.Exit(2)
