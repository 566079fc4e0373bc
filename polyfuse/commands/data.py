"""`polyfuse data inspect`: look at a manifest before training on it."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

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

    app.add_typer(data_app, name="data")
