"""Run a model over a loader and collect per-task predictions, labels and modality weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor

from polyfuse.config import TaskConfig
from polyfuse.tasks import TASKS


@dataclass
class Predictions:
    """Concatenated over a whole split. ``preds[task]``: probabilities [N,C] or values [N] / [N,K]."""

    preds: dict[str, Tensor] = field(default_factory=dict)
    labels: dict[str, Tensor] = field(default_factory=dict)
    rows: Tensor | None = None
    modality_weights: Tensor | None = None  # [N, M]
    modalities: tuple[str, ...] = ()


def move(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: move(v, device) for k, v in batch.items()}
    return batch


def cat_rows(parts: list[Tensor]) -> Tensor:
    """Concatenate batches along rows; [B, L] id batches of different widths (generation targets)
    are right padded with 0 (PAD) to the widest first."""
    widths = {p.shape[1] for p in parts if p.dim() == 2}
    if len(widths) > 1:
        width = max(widths)
        parts = [torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts]
    return torch.cat(parts)


@torch.no_grad()
def collect_predictions(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, Any]],
    tasks: Mapping[str, TaskConfig],
    drop: Iterable[str] = (),
    device: str | torch.device = "cpu",
) -> Predictions:
    """Predictions of ``model`` (a MultimodalModel) over ``batches``; inputs in ``drop`` are marked missing."""
    model.eval()
    device = torch.device(device)
    drop = set(drop)
    preds: dict[str, list[Tensor]] = {t: [] for t in tasks}
    labels: dict[str, list[Tensor]] = {t: [] for t in tasks}
    rows: list[Tensor] = []
    weights: list[Tensor] = []
    modalities: tuple[str, ...] = ()
    for batch in batches:
        batch = move(batch, device)
        present = {k: (torch.zeros_like(v) if k in drop else v) for k, v in batch["present"].items()}
        out = model(batch["inputs"], present)
        for name, task in tasks.items():
            preds[name].append(TASKS[task.type].predictions(out.outputs[name]).cpu())
            if name in batch["labels"]:
                labels[name].append(batch["labels"][name].cpu())
        rows.append(batch["row"].cpu())
        if out.fused.modality_weights is not None:
            weights.append(out.fused.modality_weights.float().cpu())
            modalities = out.fused.modalities
    return Predictions(
        preds={k: cat_rows(v) for k, v in preds.items() if v},
        labels={k: cat_rows(v) for k, v in labels.items() if v},
        rows=torch.cat(rows) if rows else None,
        modality_weights=torch.cat(weights) if weights else None,
        modalities=modalities,
    )
