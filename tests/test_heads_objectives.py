"""Heads and task objectives: shapes, ignored labels, NaN targets, label smoothing, loss combination."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import polyfuse.heads  # noqa: F401  (registers)
import polyfuse.objectives  # noqa: F401
from polyfuse.build import build_head, build_objective
from polyfuse.config import ConfigError
from polyfuse.objectives import combine_losses
from polyfuse.registry import HEADS, OBJECTIVES


@pytest.mark.parametrize("hidden", [0, 8])
@pytest.mark.parametrize(  # heads reading the whole FusionOutput (text decoders) have their own tests
    "name", [n for n in HEADS.names() if not getattr(HEADS.get(n).factory, "needs_fused", False)]
)
def test_head_shapes_and_grads(name: str, hidden: int) -> None:
    torch.manual_seed(0)
    head = HEADS.build(name, in_dim=16, out_dim=5, hidden=hidden, dropout=0.1)
    x = torch.randn(3, 16, requires_grad=True)
    out = head(x)
    assert out.shape == (3, 5) and head.in_dim == 16 and head.out_dim == 5
    out.pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    assert head.eval()(x[:1]).shape == (1, 5)  # batch of one


def test_projection_head_normalizes_unless_asked_not_to() -> None:
    x = torch.randn(4, 16) * 10
    unit = HEADS.build("projection", in_dim=16, out_dim=8)(x)
    assert torch.allclose(unit.norm(dim=-1), torch.ones(4), atol=1e-5)
    raw = HEADS.build("projection", in_dim=16, out_dim=8, normalize=False)(x)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(4), atol=1e-2)


def test_heads_are_built_by_task_type_and_reject_bad_sizes() -> None:
    head = build_head("classification", {"hidden": 4}, in_dim=6, out_dim=3)
    assert head(torch.randn(2, 6)).shape == (2, 3)
    with pytest.raises(ConfigError, match="hidden"):
        HEADS.build("regression", in_dim=4, out_dim=1, hidden=-1)


def test_cross_entropy_matches_torch_and_ignores_unlabelled_rows() -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 4), torch.tensor([0, 3, -100, 1, -100, 2])
    loss = OBJECTIVES.build("cross_entropy")(logits, targets)
    labelled = targets != -100
    assert torch.allclose(loss, F.cross_entropy(logits[labelled], targets[labelled]))
    # changing the logits of unlabelled rows changes nothing
    other = logits.clone()
    other[~labelled] = 100.0
    assert torch.allclose(OBJECTIVES.build("cross_entropy")(other, targets), loss)


def test_cross_entropy_with_no_label_is_zero_with_grad() -> None:
    logits = torch.randn(3, 4, requires_grad=True)
    loss = OBJECTIVES.build("cross_entropy")(logits, torch.full((3,), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_cross_entropy_class_weights_match_torch() -> None:
    torch.manual_seed(1)
    logits, targets = torch.randn(8, 3), torch.tensor([0, 1, 2, 2, -100, 1, 0, 2])
    weights = [1.0, 2.0, 0.5]
    loss = OBJECTIVES.build("cross_entropy", class_weights=weights)(logits, targets)
    expected = F.cross_entropy(logits, targets, weight=torch.tensor(weights), ignore_index=-100)
    assert torch.allclose(loss, expected, atol=1e-6)
    with pytest.raises(ConfigError, match="class_weights"):
        OBJECTIVES.build("cross_entropy", class_weights=[1.0, 2.0])(logits, targets)


def test_label_smoothing_penalizes_confident_predictions() -> None:
    confident = torch.tensor([[20.0, 0.0, 0.0]])
    target = torch.tensor([0])
    plain = build_objective("classification", None, label_smoothing=0.0)(confident, target)
    smooth = build_objective("classification", None, label_smoothing=0.3)(confident, target)
    assert plain < 1e-6 and smooth > 1.0
    assert torch.allclose(smooth, F.cross_entropy(confident, target, label_smoothing=0.3))
    with pytest.raises(ConfigError, match="label_smoothing"):
        OBJECTIVES.build("cross_entropy", label_smoothing=1.5)


@pytest.mark.parametrize("name", ["mse", "l1"])
def test_regression_losses_skip_nan_targets(name: str) -> None:
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    target = torch.tensor([[1.5, math.nan], [math.nan, 2.0]])
    loss = OBJECTIVES.build(name)(pred, target)
    diffs = torch.tensor([-0.5, 2.0])
    expected = diffs.pow(2).mean() if name == "mse" else diffs.abs().mean()
    assert torch.allclose(loss, expected)
    loss.backward()
    assert pred.grad[0, 1] == 0 and pred.grad[1, 0] == 0 and pred.grad[0, 0] != 0


@pytest.mark.parametrize("name", ["mse", "l1"])
def test_regression_losses_with_no_label_are_zero_with_grad(name: str) -> None:
    pred = torch.randn(3, 1, requires_grad=True)
    loss = OBJECTIVES.build(name)(pred, torch.full((3,), math.nan))  # [B] targets for [B, 1] outputs
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_regression_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="do not match"):
        OBJECTIVES.build("mse")(torch.randn(4, 2), torch.randn(4, 3))


def test_bce_masks_missing_labels_and_matches_torch() -> None:
    torch.manual_seed(2)
    logits = torch.randn(3, 4)
    targets = torch.tensor([[1.0, 0.0, math.nan, 1.0], [0.0, -100.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    loss = OBJECTIVES.build("bce")(logits, targets)
    valid = ~torch.isnan(targets) & (targets >= 0)
    assert torch.allclose(loss, F.binary_cross_entropy_with_logits(logits[valid], targets[valid]))
    weighted = OBJECTIVES.build("bce", pos_weight=[3.0] * 4)(logits, targets)
    assert weighted > loss
    smooth = OBJECTIVES.build("bce", label_smoothing=0.2)(torch.full((1, 2), 30.0), torch.ones(1, 2))
    assert smooth > 1.0


def test_combine_losses_weighs_and_checks_names() -> None:
    losses = {"a": torch.tensor(2.0, requires_grad=True), "b": torch.tensor(3.0)}
    total = combine_losses(losses, {"a": 0.5})
    assert total.item() == pytest.approx(0.5 * 2.0 + 3.0)
    total.backward()
    assert losses["a"].grad.item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown tasks"):
        combine_losses(losses, {"c": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        combine_losses({}, {})


def test_every_task_loss_is_registered_with_its_task() -> None:
    for name in ("cross_entropy", "mse", "l1", "bce"):
        assert name in OBJECTIVES
    assert set(HEADS.names()) >= {"classification", "regression", "multilabel", "projection"}
