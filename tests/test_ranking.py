"""Candidate ranking on held-out predictions: metric order, and ties within a row broken by log-loss."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from polyfuse.train.ranking import by_metric, log_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from selection_replay import by_metric_then_loss  # noqa: E402  (the replayed rule selection does not use)


def test_log_loss_is_the_mean_negative_log_probability_of_the_true_class_over_labelled_rows() -> None:
    probs = np.array([[0.8, 0.2], [0.4, 0.6], [0.5, 0.5]])
    labels = np.array([0, 1, -100])  # the last row is unlabelled
    assert math.isclose(log_loss(probs, labels), -(math.log(0.8) + math.log(0.6)) / 2)
    assert math.isfinite(log_loss(np.array([[1.0, 0.0]]), np.array([1])))  # a zero probability is clipped


def test_metric_order_keeps_ties_in_candidate_order_and_follows_the_mode() -> None:
    assert by_metric([0.9, 0.95, 0.9], "max") == [1, 0, 2]
    assert by_metric([0.3, 0.1, 0.2], "min") == [1, 2, 0]


def test_a_one_row_lead_on_forty_rows_is_a_tie_broken_by_log_loss() -> None:
    # JapaneseVowels' selection: one candidate right on all 40 rows, five on 39; the 40/40 one was the
    # least confident (highest log-loss) and the worst on test
    scores = [0.975, 0.975, 0.975, 0.975, 0.975, 1.0]
    losses = [0.09, 0.05, 0.12, 0.08, 0.10, 0.20]
    assert by_metric(scores, "max")[0] == 5
    order = by_metric_then_loss(scores, losses, rows=40, mode="max")
    assert order == [1, 3, 0, 4, 2, 5]


def test_a_lead_of_two_rows_is_kept_and_the_rest_follow_by_metric() -> None:
    scores = [0.95, 1.0, 0.9]
    losses = [0.01, 0.5, 0.02]
    assert by_metric_then_loss(scores, losses, rows=40, mode="max") == [1, 0, 2]


def test_a_candidate_without_a_loss_sorts_last_among_the_tied() -> None:
    assert by_metric_then_loss([0.8, 0.8], [None, 0.4], rows=10, mode="max") == [1, 0]
