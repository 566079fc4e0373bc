"""How selection ranks candidates by their held-out predictions.

A validation split of a small table holds few rows: on 40 rows one row is 2.5 accuracy points, and
five candidates can tie, or differ by a row that is noise.

- ``by_metric``: the selection metric alone (ties kept in candidate order); what selection ranks by.
  (Breaking one-row ties by log-loss instead changed one pick of 12 finished selections, for the worse:
  ``by_metric_then_loss`` in ``benchmarks/selection_replay.py``.)
- ``log_loss``: a proper score, continuous where accuracy moves a row at a time; what the greedy
  ensemble weights are fitted to under ``selection.ensemble_fit: log_loss``.

Torch-free: numbers in, order out.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: a held-out probability is clipped to [EPS, 1] before its log is taken
EPS = 1e-7


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class; ``probs`` [N, C] (rows sum to 1), ``labels`` [N] ints."""
    labels = np.asarray(labels).astype(int)
    keep = labels >= 0  # unlabelled rows (IGNORE_INDEX) carry no score
    picked = np.asarray(probs, dtype=np.float64)[np.flatnonzero(keep), labels[keep]]  # [N']
    return float(-np.mean(np.log(np.clip(picked, EPS, 1.0)))) if picked.size else float("nan")


def by_metric(scores: Sequence[float], mode: str) -> list[int]:
    """Indices, best metric first (a stable sort: ties keep their order)."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(range(len(scores)), key=lambda i: sign * scores[i])
