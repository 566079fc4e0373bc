"""Stopping bad trials early: the Optuna pruner by name, and the Lightning callback that asks it."""

from __future__ import annotations

import math
from typing import Any

import lightning as L

from polyfuse.errors import ConfigError

#: ``--pruner`` names; median is the default
PRUNERS = ("median", "hyperband", "threshold", "none")


def make_pruner(name: str, direction: str, threshold: float | None = None) -> Any:
    """An Optuna pruner.

    median: stop a trial whose metric, from its second evaluation on, is worse than the median of
    earlier trials at the same epoch (after two trials). hyperband: successive halving over epochs.
    threshold: stop a trial as soon as its metric is worse than ``threshold`` (below it when the
    metric is maximised, above it when minimised). none: never stop a trial early.
    """
    import optuna

    if name not in PRUNERS:
        raise ConfigError(f"--pruner: {name!r} is not a pruner; allowed: {', '.join(PRUNERS)}")
    if (threshold is not None) != (name == "threshold"):
        raise ConfigError("--prune-threshold goes with --pruner threshold (and that pruner needs it)")
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    if name == "threshold":
        assert threshold is not None
        if direction == "maximize":
            return optuna.pruners.ThresholdPruner(lower=float(threshold))
        return optuna.pruners.ThresholdPruner(upper=float(threshold))
    return optuna.pruners.NopPruner()


class PruningCallback(L.Callback):
    """After each validation pass: reports ``monitor`` to the trial (step = epoch) and raises
    ``optuna.TrialPruned`` when the pruner says the trial is not worth finishing."""

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.reported: list[float] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        import optuna

        score = float(value)
        epoch = int(trainer.current_epoch)
        self.trial.report(score, epoch)
        self.reported.append(score)
        if self.trial.should_prune():
            shown = f"{score:.4f}" if math.isfinite(score) else str(score)
            raise optuna.TrialPruned(f"pruned at epoch {epoch}: {self.monitor} {shown}")
