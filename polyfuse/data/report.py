"""Cleaning policy and the data report: every row with a problem, where it is and what was done.

A *problem* is found while a row is turned into arrays (an unreadable file, an empty
cell, a number that had to be imputed, a label outside the vocabulary). The policy
``data.missing`` decides what happens to rows whose *input* could not be used:

- ``missing`` (default): the row is kept and that modality is marked absent;
- ``skip``: the row is dropped;
- ``error``: the ``DataError`` is raised at once.

Imputed values and ignored labels never drop a row; they are only recorded.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from polyfuse.errors import ConfigError, DataError

EMPTY = "empty value"  # the category of an empty input cell (normal missing data)

POLICIES: tuple[str, ...] = ("missing", "skip", "error")

#: Problem stages: an unusable input (the policy applies), an imputed value, an ignored label.
STAGE_INPUT = "input"
STAGE_IMPUTED = "imputed"
STAGE_LABEL = "label"

ACTION_MISSING = "marked missing"
ACTION_SKIPPED = "skipped"
ACTION_IMPUTED = "imputed"
ACTION_LABEL = "label ignored"

#: How many entries ``data_report.md`` lists (the JSON file always has all of them).
MARKDOWN_ROWS = 1000


@dataclass
class Problem:
    """Something wrong with one cell of one row, found while encoding it."""

    stage: str  # STAGE_INPUT, STAGE_IMPUTED or STAGE_LABEL
    column: str | None
    reason: str  # full message (names the referenced file when there is one)
    category: str  # short kind for the summary: "unreadable file", "empty value", ...
    name: str | None = None  # the input or task the cell belongs to

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "column": self.column, "reason": self.reason, "category": self.category, "name": self.name}


def check_policy(policy: str) -> str:
    """Return ``policy`` or raise ConfigError naming the allowed values."""
    if policy not in POLICIES:
        raise ConfigError(f"data.missing: {policy!r} is not allowed; allowed: {', '.join(map(repr, POLICIES))}")
    return policy


class DataReport:
    """Entries ``{split, row, column, file, reason, action, problem, input}``, one per problem found."""

    def __init__(self, entries: Iterable[dict[str, Any]] = ()) -> None:
        self.entries: list[dict[str, Any]] = [dict(e) for e in entries]

    def __len__(self) -> int:
        return len(self.entries)

    def add(
        self,
        *,
        split: str | None,
        row: int | None,
        column: str | None,
        file: str | None,
        reason: str,
        action: str,
        problem: str | None = None,
        input: str | None = None,
    ) -> None:
        self.entries.append(
            {
                "split": split,
                "row": None if row is None else int(row),
                "column": column,
                "file": None if file is None else str(file),
                "reason": reason,
                "action": action,
                "problem": problem or reason,
                "input": input,
            }
        )

    def extend(self, other: "DataReport") -> None:
        self.entries.extend(dict(e) for e in other.entries)

    # ------------------------------------------------------------------ policy
    def record(
        self, problems: list[Problem], *, split: str | None, row: int, file: str | None, policy: str
    ) -> bool:
        """Apply ``policy`` to one row's problems and record them. Returns False when the row is dropped.

        Under ``error`` the first unusable input raises its DataError (nothing is recorded).
        """
        check_policy(policy)
        unusable = [p for p in problems if p.stage == STAGE_INPUT]
        if unusable and policy == "error":
            first = unusable[0]
            raise DataError(first.reason, file=file, row=row, column=first.column)
        keep = not (unusable and policy == "skip")
        for p in problems:
            if not keep:
                action = ACTION_SKIPPED
            elif p.stage == STAGE_INPUT:
                action = ACTION_MISSING
            elif p.stage == STAGE_IMPUTED:
                action = ACTION_IMPUTED
            else:
                action = ACTION_LABEL
            self.add(
                split=split, row=row, column=p.column, file=file, reason=p.reason, action=action,
                problem=p.category, input=p.name,
            )
        return keep

    # ------------------------------------------------------------------ queries
    def rows(self, split: str | None = None, action: str | None = None) -> list[int]:
        """Sorted distinct row numbers with an entry (optionally of one split / action)."""
        return sorted(
            {
                int(e["row"])
                for e in self.entries
                if e["row"] is not None
                and (split is None or e["split"] == split)
                and (action is None or e["action"] == action)
            }
        )

    def problems(self) -> list[dict[str, Any]]:
        """Entries that are problems: everything but empty input cells (normal missing data)."""
        return [e for e in self.entries if not is_blank(e)]

    def summary(self) -> dict[str, Any]:
        """Counts of problems: distinct affected rows (``total``), per split, per problem kind, per action;
        and, apart, ``missing``: rows per input column whose cell was simply empty (marked missing)."""
        rows_by_split: dict[str, set[int]] = {}
        problems = self.problems()
        for e in problems:
            rows_by_split.setdefault(str(e["split"]), set()).add(e["row"])
        blank: dict[str, set[tuple[str, int]]] = {}
        for e in self.entries:
            if is_blank(e):
                blank.setdefault(str(e["column"]), set()).add((str(e["split"]), e["row"]))
        return {
            "total": sum(len(rows) for rows in rows_by_split.values()),
            "entries": len(problems),
            "by_split": {split: len(rows) for split, rows in rows_by_split.items()},
            "by_reason": dict(Counter(f"{e['column']}: {e['problem']}" for e in problems).most_common()),
            "by_action": dict(Counter(e["action"] for e in problems).most_common()),
            "missing": {column: len(rows) for column, rows in sorted(blank.items(), key=lambda kv: -len(kv[1]))},
        }

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "entries": self.entries}

    def save(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``data_report.json`` (everything) and ``data_report.md`` (readable) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        json_path = directory / "data_report.json"
        json_path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        md_path = directory / "data_report.md"
        md_path.write_text(self.to_markdown(), encoding="utf-8")
        return json_path, md_path

    @classmethod
    def load(cls, directory_or_file: str | Path) -> "DataReport":
        path = Path(directory_or_file)
        if path.is_dir():
            path = path / "data_report.json"
        return cls(json.loads(path.read_text(encoding="utf-8")).get("entries", []))

    def to_markdown(self) -> str:
        summary = self.summary()
        lines = ["# Data report", ""]
        if summary["missing"]:
            lines += ["Empty cells in input columns (normal missing data, the input is marked missing in that row):", ""]
            lines += [f"- missing: {count} rows of `{column}`" for column, count in summary["missing"].items()]
            lines.append("")
        problems = self.problems()
        if not problems:
            lines += ["No problems found: every other cell was read as it is.", ""]
            return "\n".join(lines)
        lines += [f"Rows with a problem: {summary['total']} ({summary['entries']} entries).", ""]
        lines += ["| split | rows |", "|---|---|"]
        lines += [f"| {split} | {count} |" for split, count in summary["by_split"].items()]
        lines += ["", "| column: problem | count |", "|---|---|"]
        lines += [f"| {_cell(key)} | {count} |" for key, count in summary["by_reason"].items()]
        lines += ["", "| action | count |", "|---|---|"]
        lines += [f"| {action} | {count} |" for action, count in summary["by_action"].items()]
        lines += ["", "## Entries", "", "| split | file | row | column | reason | action |", "|---|---|---|---|---|---|"]
        for e in problems[:MARKDOWN_ROWS]:
            lines.append(
                f"| {e['split']} | {_cell(e['file'])} | {e['row']} | {_cell(e['column'])} | {_cell(e['reason'])} | {e['action']} |"
            )
        if len(problems) > MARKDOWN_ROWS:
            lines.append(f"\n... and {len(problems) - MARKDOWN_ROWS} more entries in data_report.json.")
        lines.append("")
        return "\n".join(lines)


def is_blank(entry: dict[str, Any]) -> bool:
    """An empty cell of an input column that was marked missing: missing data, not a problem."""
    return entry.get("problem") == EMPTY and entry.get("action") == ACTION_MISSING


def _cell(value: Any) -> str:
    """Markdown table cell text."""
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")
