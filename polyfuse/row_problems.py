"""Rows that could not be predicted, and the warning when many rows have a problem (no torch here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from polyfuse.data.report import EMPTY

#: The problem of a row that got no prediction.
NO_INPUT = "no prediction: every input of the row is missing or unreadable"
#: Above this share of rows with a problem, predict warns (a wrong root marks every file missing).
PROBLEM_SHARE_WARNING = 0.05


class PredictionProblemsWarning(UserWarning):
    """Many predicted rows had missing or unreadable inputs."""


def problems_summary(frame: pd.DataFrame, root: Path | None = None, limit: int = 3) -> str | None:
    """One line when more than 5% of ``frame``'s rows have a problem (count and first reasons), else None."""
    if "problems" not in frame.columns or frame.empty:
        return None
    # an empty optional cell is missing data, not a problem: rows with only those do not count
    flagged = frame["problems"].astype(str).map(lambda cell: any(r and not r.endswith(f": {EMPTY}") for r in cell.split("; ")))
    count = int(flagged.sum())
    if count <= PROBLEM_SHARE_WARNING * len(frame):
        return None
    reasons = list(dict.fromkeys(r for cell in frame.loc[flagged, "problems"] for r in str(cell).split("; ") if r))[:limit]
    where = f"; relative file paths resolve against {root} (pass root=... / --root)" if root is not None else ""
    return f"{count} of {len(frame)} rows ({count / len(frame):.0%}) have a problem, e.g. {' | '.join(reasons)}{where}"


def usable_rows(batch: Mapping[str, Any], inputs: Iterable[str]) -> np.ndarray:
    """Bool [B]: batch rows with at least one of ``inputs`` present."""
    usable = np.zeros(len(np.asarray(batch["row"])), dtype=bool)
    for name in inputs:
        if name in batch["present"]:
            usable |= np.asarray(batch["present"][name], dtype=bool)
    return usable


def mark_no_input(cells: list[str], predicted: Iterable[int]) -> list[str]:
    """``cells`` (one problems cell per chunk row) with NO_INPUT added to every row not in ``predicted``."""
    done = {int(r) for r in predicted}
    return [cell if i in done else "; ".join(c for c in (cell, NO_INPUT) if c) for i, cell in enumerate(cells)]


def warn_about_problems(frame: pd.DataFrame, root: Path | None = None) -> None:
    import warnings

    message = problems_summary(frame, root)
    if message:
        warnings.warn(message, PredictionProblemsWarning, stacklevel=3)
