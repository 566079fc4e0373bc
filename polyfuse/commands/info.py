"""`polyfuse recipes` and `polyfuse components`."""

from __future__ import annotations

import typer

from polyfuse.commands._common import console, print_json, user_errors


def register(app: typer.Typer) -> None:
    @app.command("recipes")
    @user_errors
    def recipes(
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
        show: str = typer.Option(None, "--show", help="Print one recipe's full YAML."),
    ) -> None:
        """List the shipped recipes (use one with `polyfuse train NAME`)."""
        from polyfuse.recipes import load_recipe, recipe_names, recipe_summary

        if show:
            typer.echo(load_recipe(show).to_yaml())
            return
        rows = [recipe_summary(n) for n in recipe_names()]
        if as_json:
            print_json(rows)
            return
        from rich.table import Table

        table = Table(title="polyfuse recipes")
        for col in ("name", "dataset", "inputs", "fusion", "description"):
            table.add_column(col)
        for r in rows:
            inputs = r["inputs"] if isinstance(r["inputs"], str) else ", ".join(r["inputs"])
            table.add_row(r["name"], str(r["dataset"]), inputs, str(r["fusion"]), r["description"])
        console().print(table)

    @app.command("components")
    @user_errors
    def components(
        as_json: bool = typer.Option(False, "--json", help="Print JSON only: {encoders: {kind: [...]}, fusions, heads, ...}."),
        details: bool = typer.Option(False, "--details", help="With --json: one record per component (parameters, help)."),
    ) -> None:
        """List registered encoders (per input kind), fusions, heads, objectives and datasets."""
        from polyfuse.registry import DATASETS, ENCODERS, FUSIONS, HEADS, OBJECTIVES, load_all

        load_all()

        kinds = {"encoder": ENCODERS, "fusion": FUSIONS, "head": HEADS, "objective": OBJECTIVES, "dataset": DATASETS}
        rows = []
        for kind, reg in kinds.items():
            for name, entry in reg.items():
                params = [p for p in entry.parameters()]
                mods = entry.metadata.get("modalities", ())
                rows.append({"kind": kind, "name": name, "modalities": list(mods), "parameters": params, "help": entry.help})
        if as_json:
            from polyfuse import list_components

            print_json(rows if details else list_components())
            return
        from rich.table import Table

        table = Table(title="polyfuse components")
        for col in ("kind", "name", "reads", "description"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["kind"], r["name"], ", ".join(r["modalities"]), r["help"])
        console().print(table)

    @app.command("version")
    def version() -> None:
        """Print the polyfuse version."""
        from polyfuse._version import __version__

        typer.echo(__version__)
