"""The LightningModule around MultimodalModel: losses per task, metrics, optimizer and schedule."""

from __future__ import annotations

import math
from typing import Any, Mapping

import lightning as L
import torch
from torch import Tensor, nn

from polyfuse.build import build_objective
from polyfuse.config import TaskConfig, TrainConfig
from polyfuse.model import MultimodalModel
from polyfuse.train.init import FreezeSchedule, parameter_groups
from polyfuse.tasks import TASKS
from polyfuse.types import ModelOutput


class RowWeightedMeans:
    """Running means of detached scalars, weighted by the rows of each batch: {name: sum}, {name: rows}."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.rows: dict[str, int] = {}

    def add(self, name: str, value: Tensor, rows: int) -> None:
        term = value.detach() * rows
        self.sums[name] = term if name not in self.sums else self.sums[name] + term
        self.rows[name] = self.rows.get(name, 0) + rows

    def pop(self) -> dict[str, Tensor]:
        """The means so far ({name: 0-dim tensor}); empties the sums."""
        means = {name: total / max(1, self.rows[name]) for name, total in self.sums.items()}
        self.sums, self.rows = {}, {}
        return means

    def __bool__(self) -> bool:
        return bool(self.sums)


class MultimodalLightningModule(L.LightningModule):
    """Trains a MultimodalModel on several tasks at once with per-task loss weights."""

    def __init__(
        self,
        model: MultimodalModel,
        tasks: Mapping[str, TaskConfig],
        task_dims: Mapping[str, int],
        train: TrainConfig,
        objective_weights: Mapping[str, float] | None = None,
        class_weights: Mapping[str, list[float]] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        # pretraining / auxiliary objectives live in model.objectives:
        # forward(model, batch, out) -> {"loss": scalar, ...}; weighted by objective_weights
        self.extra_weights = {k: (objective_weights or {}).get(k, 1.0) for k in model.objectives}
        self.tasks = dict(tasks)
        self.train_cfg = train
        self.objectives = nn.ModuleDict(
            {
                name: build_objective(
                    task.type, task.loss, label_smoothing=task.label_smoothing,
                    class_weights=(class_weights or {}).get(name),
                )
                for name, task in self.tasks.items()
            }
        )
        self.metrics = nn.ModuleDict(
            {
                split: nn.ModuleDict(
                    {name: TASKS[task.type].metrics(task_dims[name]) for name, task in self.tasks.items()}
                )
                for split in ("valid", "test")
            }
        )
        self.total_steps: int | None = None
        self.train_means = RowWeightedMeans()  # this epoch's training losses, logged once at its end
        # fine-tuning: encoders frozen for the first train.freeze_epochs epochs (see polyfuse.train.init)
        self.freeze_schedule = FreezeSchedule(model, train.freeze_epochs) if train.freeze_epochs > 0 else None

    # ------------------------------------------------------------------ forward / loss
    def forward(self, batch: Mapping[str, Any]) -> ModelOutput:
        return self.model(batch["inputs"], batch["present"], targets=batch.get("labels"))

    def losses(self, out: ModelOutput, labels: Mapping[str, Tensor]) -> dict[str, Tensor]:
        result = {}
        for name, task in self.tasks.items():
            pred = out.outputs[name]
            target = labels[name]
            if TASKS[task.type].standardized:
                pred, target = self._standardized(name, pred.float(), target.float())
            result[name] = self.objectives[name](pred.float(), target)
        return result

    def _standardized(self, name: str, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Regression outputs and targets in the head's standardized units (the loss is scale-free)."""
        head = self.model.heads[name]
        mean, std = getattr(head, "target_mean", None), getattr(head, "target_std", None)
        if mean is not None and std is not None:
            pred = (pred - mean) / std
            target = (target - mean) / std if target.dim() == pred.dim() else (target - mean[0]) / std[0]
        if pred.shape[-1] == 1 and target.dim() == 1:
            pred = pred.squeeze(-1)
        return pred, target

    def total_loss(self, losses: Mapping[str, Tensor]) -> Tensor:
        total: Tensor | None = None
        for name, loss in losses.items():
            term = self.tasks[name].weight * loss
            total = term if total is None else total + term
        assert total is not None
        return total

    def objective_losses(self, batch: Mapping[str, Any], out: ModelOutput, split: str) -> Tensor | None:
        """Weighted sum of the extra objectives (logged each under ``split/<name>/...``)."""
        total = None
        size = int(batch["row"].shape[0])
        for name, objective in self.model.objectives.items():
            result = objective(self.model, batch, out)
            for key, value in result.items():
                if split == "train":
                    self.train_means.add(f"train/{name}/{key}", value, size)
                else:
                    self.log(f"{split}/{name}/{key}", value, batch_size=size, on_step=False, on_epoch=True, sync_dist=True)
            term = self.extra_weights[name] * result["loss"]
            total = term if total is None else total + term
        return total

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        out = self(batch)
        losses = self.losses(out, batch["labels"])
        loss = self.total_loss(losses) if losses else None
        extra = self.objective_losses(batch, out, "train") if len(self.model.objectives) else None
        loss = extra if loss is None else (loss if extra is None else loss + extra)
        size = int(batch["row"].shape[0])
        self.train_means.add("train/loss", loss, size)
        if len(losses) > 1:
            for name, value in losses.items():
                self.train_means.add(f"train/{name}/loss", value, size)
        if self._log_this_step():
            self.log("train/loss_step", loss, prog_bar=True, batch_size=size, on_step=True, on_epoch=False)
        if self.trainer.is_last_batch:
            self._log_train_means()
        return loss

    # ------------------------------------------------------------------ training-loss logging
    # Lightning's ``self.log`` costs ~0.3 ms a call on CPU (it moves a Metric's state every call), as
    # much as a small model's whole step: the epoch means are summed here and logged once per epoch,
    # and the step value only at the steps whose metrics reach the loggers (every step when a
    # progress bar shows it). Keys as Lightning's on_step + on_epoch logging names them:
    # ``train/loss_step``, ``train/loss_epoch`` (and ``train/loss``, the epoch mean, for callbacks).
    def _log_this_step(self) -> bool:
        trainer = self.trainer
        if trainer.progress_bar_callback is not None:
            return True
        connector = getattr(trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True))

    def _log_train_means(self) -> None:
        """Log the epoch's training means (at its last batch, or at its end when it stopped early)."""
        for name, value in self.train_means.pop().items():
            if name == "train/loss":
                self.log("train/loss_epoch", value, batch_size=1, on_step=False, on_epoch=True)
                self.log("train/loss", value, batch_size=1, on_step=False, on_epoch=True, logger=False)
            else:
                self.log(name, value, batch_size=1, on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        if self.train_means:  # an epoch cut short (max_steps, max_time) has had no last batch
            self._log_train_means()

    def _eval_step(self, batch: Mapping[str, Any], split: str) -> None:
        out = self(batch)
        losses = self.losses(out, batch["labels"])
        size = int(batch["row"].shape[0])
        total = self.total_loss(losses) if losses else None
        if len(self.model.objectives):
            extra = self.objective_losses(batch, out, split)
            total = extra if total is None else total + extra
        if total is not None:
            self.log(f"{split}/loss", total, prog_bar=split == "valid", batch_size=size, sync_dist=True)
        for name, task in self.tasks.items():
            kind = TASKS[task.type]
            target = batch["labels"][name]
            keep = kind.labelled(target)
            if not bool(keep.any()):
                continue
            preds = kind.eval_predictions(self.model.heads[name], out.outputs[name], out.fused)
            self.metrics[split][name].update(preds[keep], kind.metric_targets(target[keep]))

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "valid")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _log_metrics(self, split: str) -> None:
        for name, collection in self.metrics[split].items():
            if not any(m.update_count for m in collection.values()):
                continue
            for metric, value in collection.compute().items():
                self.log(f"{split}/{name}/{metric}", value, prog_bar=split == "valid", sync_dist=True)
            collection.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("valid")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    # ------------------------------------------------------------------ optimization
    def on_train_epoch_start(self) -> None:
        self.train_means.pop()  # a resumed epoch starts its means afresh, as Lightning's own logging does
        if self.freeze_schedule is not None:
            # toggling requires_grad skips the backward through frozen encoders; under DDP the
            # reducer needs them on, so there gradients are dropped before each step instead
            single = getattr(self.trainer, "world_size", 1) == 1
            self.freeze_schedule.apply(self.current_epoch, toggle_grad=single)

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        if self.freeze_schedule is not None and self.freeze_schedule.frozen(self.current_epoch):
            self.freeze_schedule.drop_grads()

    def _probe_inputs(self) -> Any:
        """One training batch's inputs (on this device): layer-wise decay orders encoder blocks by data flow."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            return None
        from polyfuse.evaluate.predict import move

        batch = next(iter(datamodule.train_dataloader()), None)
        return None if batch is None else move(batch["inputs"], self.device)

    def configure_optimizers(self) -> Any:
        cfg = self.train_cfg
        # no weight decay on biases, norms, embeddings, tokens; encoder lr decayed per depth when asked
        probe = self._probe_inputs() if cfg.layerwise_lr_decay not in (None, 1.0) else None
        groups = parameter_groups(self.model, cfg.weight_decay, cfg.lr, cfg.layerwise_lr_decay, probe)
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
        total = self.total_steps or max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(cfg.warmup * total)
        schedule = lr_lambda(cfg.schedule, warmup, total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def lr_lambda(kind: str, warmup: int, total: int):  # noqa: ANN201 - returns a plain function
    """Linear warmup, then cosine / linear decay to zero, or constant."""

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
