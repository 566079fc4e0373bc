"""What the trainer fits from labels: balanced class weights, regression target scales, binary thresholds."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from polyfuse.heads.mlp import RegressionHead
from polyfuse.train.targets import balanced_weights
from polyfuse.train.threshold import _last_linear, best_threshold


def test_balanced_weights_follow_scikit_learns_rule() -> None:
    labels = np.array([0] * 8 + [1] * 2 + [-100])  # -100: unlabelled row, ignored
    weights = balanced_weights(labels, 3)
    assert weights[0] == 10 / (2 * 8) and weights[1] == 10 / (2 * 2)
    assert weights[2] == 1.0  # a class not seen in training


def test_best_threshold_finds_the_cut_that_separates_the_classes() -> None:
    p1 = np.array([0.05, 0.1, 0.2, 0.25, 0.3, 0.35, 0.6, 0.9])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])  # at 0.5 two positives are missed
    t, score, at_half = best_threshold(p1, labels, "f1")
    assert 0.25 <= t < 0.3 and score == 1.0 and at_half < 1.0
    t, score, _ = best_threshold(np.array([0.1, 0.9]), np.array([0, 1]), "acc")
    assert t == 0.5 and score == 1.0  # already perfect: the threshold stays at 0.5


def test_folding_the_threshold_into_the_bias_moves_the_argmax_to_the_tuned_cut() -> None:
    head = nn.Sequential(nn.Linear(3, 2))
    x = torch.randn(200, 3)
    before = head(x).softmax(-1)[:, 1]
    t = 0.3
    with torch.no_grad():
        _last_linear(head).bias[0] += float(np.log(t / (1 - t)))
    after = head(x).argmax(-1)
    assert torch.equal(after, (before > t).long())


def test_regression_head_predicts_in_target_units_from_standardized_layers() -> None:
    head = RegressionHead(4, 1)
    targets = torch.tensor([100.0, 110.0, 120.0, float("nan")])
    head.fit_targets(targets)
    assert torch.allclose(head.target_mean, torch.tensor([110.0]))
    nn.init.zeros_(head.net[-1].weight)
    nn.init.zeros_(head.net[-1].bias)
    assert torch.allclose(head(torch.randn(5, 4)), torch.full((5, 1), 110.0))  # starts at the training mean
    assert "target_mean" in head.state_dict()  # saved with the weights
