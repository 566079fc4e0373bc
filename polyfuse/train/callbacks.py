"""Callbacks: checkpointing for exact resume, RNG state in checkpoints, metric history for curves."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch


LAST = "last"
BEST = "best"


def checkpoint_callbacks(
    dirpath: Path, monitor: str, mode: str, every_n_train_steps: int | None = None, every_n_epochs: int = 1
) -> tuple[L.pytorch.callbacks.ModelCheckpoint, list[L.pytorch.callbacks.ModelCheckpoint]]:
    """(best, all): ``best.ckpt`` follows ``monitor``; ``last.ckpt`` is written at the end of EVERY epoch.

    Both save at the very end of a training epoch (after validation and after every other
    callback's ``on_train_epoch_end``, since Lightning runs checkpoint callbacks last), so
    ``last.ckpt`` holds a finished epoch and a resumed run starts cleanly at the next one.
    (Lightning's own ``save_last`` writes ``last.ckpt`` only when the monitored metric improves,
    and at validation end, which Lightning counts as mid-epoch.) ``every_n_train_steps`` adds
    mid-epoch ``last.ckpt`` saves. The state is written once per epoch: in an epoch that improved
    ``monitor``, ``best.ckpt`` is written first and ``last.ckpt`` becomes a hard link to it (see
    ``LastCheckpoint``). A run killed between the two resumes from the previous ``last.ckpt`` and
    redoes that epoch, rewriting ``best.ckpt`` the same.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    best = ModelCheckpoint(
        dirpath=dirpath, filename=BEST, monitor=monitor, mode=mode, save_top_k=1, save_last=False,
        every_n_epochs=every_n_epochs,
        enable_version_counter=False, save_on_train_epoch_end=True,
    )
    last = LastCheckpoint(
        best, dirpath=dirpath, filename=LAST, monitor=None, save_top_k=1, save_last=False, every_n_epochs=every_n_epochs,
        enable_version_counter=False, save_on_train_epoch_end=True,
    )
    callbacks = [best, last]
    if every_n_train_steps:
        callbacks.append(
            ModelCheckpoint(
                dirpath=dirpath, filename=LAST, monitor=None, save_top_k=1, save_last=False,
                every_n_train_steps=every_n_train_steps, enable_version_counter=False,
            )
        )
    return best, callbacks


class LastCheckpoint(L.pytorch.callbacks.ModelCheckpoint):
    """``last.ckpt`` at the end of every epoch, linked to ``best.ckpt`` when ``best`` has just written it.

    ``best`` runs first (callbacks keep their order) and writes ``best.ckpt`` when the monitored metric
    improved; this callback, at the same step, would then write the same training state again. Instead
    ``last.ckpt`` becomes a hard link to that file (``polyfuse.safe_state.atomic_link``: atomic and
    durable), so an improving epoch costs one write, not two. The next write of either name replaces
    it with a new file (checkpoints are always written to a temporary name and renamed), leaving the
    other name's content as it was. The one difference from a second write: the linked state holds
    this callback's own bookkeeping from before this save (its file name, which does not change).
    Anywhere hard links do not exist, it writes ``last.ckpt`` as usual.
    """

    def __init__(self, best: L.pytorch.callbacks.ModelCheckpoint | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.best = best

    @property
    def state_key(self) -> str:
        """The key a plain ModelCheckpoint with these settings has: checkpoints written before resume alike."""
        key = super().state_key
        name = type(self).__qualname__
        return "ModelCheckpoint" + key[len(name):] if key.startswith(name) else key

    def _linkable(self, trainer: L.Trainer) -> str | None:
        """``best.ckpt``'s path when ``best`` wrote it at this very step (the same state), else None."""
        best = self.best
        if best is None or best.save_weights_only != self.save_weights_only:
            return None
        path = getattr(best, "_last_checkpoint_saved", None)
        if not path or getattr(best, "_last_global_step_saved", None) != trainer.global_step:
            return None
        return str(path)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        source = self._linkable(trainer)
        if source is None or not hasattr(self, "_last_global_step_saved"):
            super()._save_checkpoint(trainer, filepath)
            return
        from polyfuse.safe_state import atomic_link

        linked = atomic_link(source, filepath) if trainer.is_global_zero else True
        if not bool(trainer.strategy.broadcast(linked, src=0)):  # every rank takes the same branch
            super()._save_checkpoint(trainer, filepath)
            return
        trainer.strategy.barrier("LastCheckpoint.link")
        # what ModelCheckpoint._save_checkpoint records after a save
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            from weakref import proxy

            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


class RNGStateCallback(L.Callback):
    """Stores torch / numpy / python RNG states in every checkpoint and restores them on resume."""

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "numpy": {
                "name": np_state[0],
                "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                "pos": int(np_state[2]),
                "has_gauss": int(np_state[3]),
                "cached": float(np_state[4]),
            },
            "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
        internal, version, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


class MetricHistory(L.Callback):
    """Keeps every epoch's logged metrics and writes them to ``history.json`` (for curves).

    Rows are updated after validation and at the end of each training epoch (and of training); the file
    is written once per epoch, at its end (after validation, which runs inside the training epoch), atomically
    (a temporary file renamed over it: never half written) but not fsynced: the rows also travel in
    every checkpoint (``state_dict``), from which a resumed run writes the file again.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []

    def _record(self, trainer: L.Trainer, write: bool, epoch: float | None = None) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        epoch = float(trainer.current_epoch) if epoch is None else epoch
        row: dict[str, float] = {"epoch": epoch, "step": float(trainer.global_step)}
        for key, value in trainer.callback_metrics.items():
            if key.startswith("train/") and key.endswith("_step"):
                continue
            try:
                row[key.removesuffix("_epoch")] = float(value)
            except (TypeError, ValueError):
                continue
        if self.rows and self.rows[-1]["epoch"] == row["epoch"]:
            self.rows[-1].update(row)
        else:
            self.rows.append(row)
        if not write:
            return
        from polyfuse.safe_state import atomic_write_bytes

        # whole even if killed mid-write; no fsync (see the class docstring)
        atomic_write_bytes(self.path, json.dumps(self.rows, indent=1).encode("utf-8"), durable=False)

    # on_validation_end: after the module's on_validation_epoch_end has logged the epoch's metrics
    # (Lightning calls callbacks' on_validation_epoch_end before the module's)
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, write=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, write=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the last epoch's row again: an epoch cut short (max_steps) logs its training means in the
        # module's on_train_epoch_end, which Lightning calls after this callback's
        if self.rows:
            self._record(trainer, write=True, epoch=self.rows[-1]["epoch"])

    def state_dict(self) -> dict[str, Any]:
        return {"rows": json.dumps(self.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = json.loads(state["rows"])


class EvaluationLines(L.Callback):
    """Without a progress bar: one line per validation pass (epoch, step, the monitored metric, the loss)."""

    def __init__(self, monitor: str, stream: Any = None) -> None:
        self.monitor = monitor
        self.stream = stream

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # not on_validation_epoch_end: Lightning calls it on callbacks before the module's, which logs
        # the epoch's metrics, so the line would show the previous evaluation's
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        import sys

        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch}", f"step {trainer.global_step}"]
        for key in (self.monitor, "valid/loss"):
            if key in metrics:
                parts.append(f"{key} {float(metrics[key]):.4f}")
        print("  ".join(parts), file=self.stream or sys.stderr, flush=True)
