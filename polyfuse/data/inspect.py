"""``polyfuse data inspect``: what a manifest holds, how its columns would be used, and what is wrong with it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from polyfuse.data.manifest import manifest_format, read_manifest
from polyfuse.data.readers import DEFAULT_MAX_PIXELS
from polyfuse.data.schema import looks_continuous, missing_mask, infer_schema

MAX_CLASSES_SHOWN = 30  # label classes listed per label column (the rest are summed up)
MAX_PROBLEMS_SHOWN = 50  # problem rows in the text rendering (JSON has them all)


def inspect_manifest(
    path: str | Path,
    *,
    root: str | Path | None = None,
    labels: Sequence[str] = (),
    allow_outside_root: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> dict[str, Any]:
    """Read a manifest, infer its schema and check every file it names; returns a JSON-able dict.

    ``root`` (default: the manifest's folder) is where relative file paths resolve.
    """
    path = Path(path)
    frame = read_manifest(path, required_columns=labels)
    root_dir = Path(root) if root is not None else path.parent
    schema = infer_schema(
        frame, root_dir, labels=labels, sample=None, check_files=True,
        allow_outside_root=allow_outside_root, max_pixels=max_pixels,
    )
    problems = sorted(schema.problems, key=lambda p: (p.row is not None, p.row if p.row is not None else -1, str(p.column)))
    return {
        "file": str(path),
        "format": manifest_format(path),
        "root": str(root_dir.resolve()),
        "rows": int(len(frame)),
        "columns": [info.to_dict() for info in schema.columns.values()],
        "inputs": schema.inputs(),
        "labels": {name: label_balance(frame[name]) for name in schema.labels},
        "problems": [p.to_dict() for p in problems],
        "summary": {
            "problems": len(problems),
            "rows_with_problems": len({p.row for p in problems if p.row is not None}),
        },
    }


def label_balance(column: pd.Series) -> dict[str, Any]:
    """Class counts of a classification label, or the range of a regression target."""
    missing = missing_mask(column)
    present = column[~missing]
    out: dict[str, Any] = {"missing": int(missing.sum())}
    if present.empty:
        return {**out, "type": "empty"}
    if looks_continuous(present):
        values = present.astype(np.float64)
        values = values[np.isfinite(values)]
        return {
            **out,
            "type": "regression",
            "min": float(values.min()),
            "max": float(values.max()),
            "mean": float(values.mean()),
            "std": float(values.std(ddof=0)),
        }
    counts = Counter(_label_text(v) for v in present)
    ranked = counts.most_common()
    shown = dict(ranked[:MAX_CLASSES_SHOWN])
    other = sum(c for _, c in ranked[MAX_CLASSES_SHOWN:])
    result = {**out, "type": "classification", "num_classes": len(counts), "classes": shown}
    if other:
        result["other_classes_rows"] = other
    result["imbalance"] = round(ranked[0][1] / ranked[-1][1], 2)  # largest / smallest class
    return result


def render_inspection(result: dict[str, Any], console: Any) -> None:
    """Print an inspection as rich tables: columns, label balance, problems."""
    from rich.markup import escape
    from rich.table import Table

    console.print(
        f"[bold]{escape(result['file'])}[/bold]: {result['rows']:,} rows, {len(result['columns'])} columns "
        f"({result['format']}); files resolve under {escape(result['root'])}"
    )
    table = Table(title="columns")
    for name in ("column", "role", "dtype", "missing", "unique"):
        table.add_column(name, overflow="fold")
    table.add_column("examples", overflow="fold", max_width=22)
    table.add_column("why", overflow="fold", ratio=1)
    for col in result["columns"]:
        examples = _clip(" | ".join(col["examples"]), 40)
        table.add_row(
            escape(col["name"]), _role_markup(col["role"]), col["dtype"], str(col["missing"]), str(col["unique"]),
            escape(examples), escape(col["reason"]),
        )
    console.print(table)

    checked = [col for col in result["columns"] if col.get("files")]
    if checked:
        table = Table(title="files")
        for name in ("column", "checked", "unreadable", "formats"):
            table.add_column(name, overflow="fold")
        for col in checked:
            files = col["files"]
            formats = ", ".join(f"{k} ({v})" for k, v in files["formats"].items())
            bad = f"[red]{files['unreadable']}[/red]" if files["unreadable"] else "0"
            table.add_row(escape(col["name"]), str(files["checked"]), bad, escape(formats))
        console.print(table)

    if result["inputs"]:
        parts = []
        for name, entry in result["inputs"].items():
            if entry["kind"] == "tabular":
                parts.append(f"{name} (tabular: {len(entry['numeric'])} numeric, {len(entry['categorical'])} categorical)")
            else:
                parts.append(f"{name} ({entry['kind']}: column {entry['column']!r})")
        console.print("inputs: " + escape("; ".join(parts)))
    else:
        console.print("[yellow]no input columns recognized[/yellow]")

    for name, balance in result["labels"].items():
        _render_label(name, balance, console)

    problems = result["problems"]
    if not problems:
        console.print("[green]No problems found.[/green]")
        return
    table = Table(title=f"problems ({len(problems)}, in {result['summary']['rows_with_problems']} rows)")
    for name in ("row", "column", "file", "reason"):
        table.add_column(name, overflow="fold")
    for p in problems[:MAX_PROBLEMS_SHOWN]:
        table.add_row(
            "-" if p["row"] is None else str(p["row"]), escape(str(p["column"] or "")), escape(str(p["file"] or "")), escape(p["reason"])
        )
    console.print(table)
    if len(problems) > MAX_PROBLEMS_SHOWN:
        console.print(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more (--json lists them all)")


def _render_label(name: str, balance: dict[str, Any], console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    missing = f", {balance['missing']} missing" if balance["missing"] else ""
    if "mean" in balance:  # a continuous target: its range, not class counts
        console.print(
            f"label [bold]{escape(name)}[/bold] (regression{missing}): min {balance['min']:g}, max {balance['max']:g}, "
            f"mean {balance['mean']:g}, std {balance['std']:g}"
        )
        return
    if balance["type"] == "empty":
        console.print(f"label [bold]{escape(name)}[/bold]: [red]no values[/red]")
        return
    total = sum(balance["classes"].values()) + balance.get("other_classes_rows", 0)
    console.print(
        f"label [bold]{escape(name)}[/bold]: {balance['num_classes']} classes{missing}, "
        f"largest/smallest class {balance['imbalance']:g}"
    )
    table = Table()
    for col in ("class", "rows", "share"):
        table.add_column(col)
    for value, count in balance["classes"].items():
        table.add_row(escape(value), str(count), f"{count / total:.1%}")
    if balance.get("other_classes_rows"):
        table.add_row(f"(other {balance['num_classes'] - len(balance['classes'])})", str(balance["other_classes_rows"]), "")
    console.print(table)


def _label_text(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _role_markup(role: str) -> str:
    colors = {"label": "bold magenta", "id": "dim", "ignore": "dim"}
    style = colors.get(role, "cyan")
    return f"[{style}]{role}[/{style}]"
