"""EnsembleModel: several MultimodalModels over one data pipeline, predictions averaged with fixed weights.

Its forward takes and returns what a MultimodalModel's does, so predict, eval, serve and export
treat an ensemble like any other model. Per task the members' outputs are combined in the
space where averaging means something and returned as the outputs a single model would give:

- classification: ``log(sum_i w_i softmax(logits_i))`` (softmax of it = the weighted mean of probabilities)
- multilabel: ``logit(sum_i w_i sigmoid(logits_i))``
- regression: ``sum_i w_i y_i``
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from polyfuse.model import MultimodalModel
from polyfuse.tasks import TASKS
from polyfuse.types import FusionOutput, ModelOutput



class EnsembleModel(nn.Module):
    """Weighted average of member models' predictions (weights are fixed buffers that sum to 1)."""

    def __init__(
        self,
        members: Sequence[MultimodalModel],
        weights: Sequence[float],
        task_types: Mapping[str, str],
        input_order: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if not members or len(members) != len(weights):
            raise ValueError(f"an ensemble needs one weight per member, got {len(members)} members and {len(weights)} weights")
        unsupported = [t for t, kind in task_types.items() if not TASKS[kind].deployable]
        if unsupported:
            raise ValueError(f"an ensemble cannot average {task_types[unsupported[0]]} task {unsupported[0]!r}")
        w = torch.tensor([float(x) for x in weights], dtype=torch.float32)
        if (w < 0).any() or float(w.sum()) <= 0:
            raise ValueError(f"ensemble weights must be >= 0 with a positive sum, got {list(weights)}")
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", w / w.sum())  # [n_members]
        self.task_types = dict(task_types)
        used = {name for m in members for name in m.input_names}
        ordered = [n for n in input_order if n in used]
        self._input_names = tuple(ordered + sorted(used - set(ordered)))

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._input_names

    def forward(
        self,
        inputs: Mapping[str, Mapping[str, Tensor]],
        present: Mapping[str, Tensor],
        targets: Mapping[str, Tensor] | None = None,
    ) -> ModelOutput:
        outs = [member(inputs, present) for member in self.members]
        combined = {task: self._combine(kind, [o.outputs[task] for o in outs]) for task, kind in self.task_types.items()}
        pooled = torch.cat([o.fused.pooled for o in outs], dim=-1)  # [B, sum of member widths]
        return ModelOutput(outputs=combined, fused=FusionOutput(pooled=pooled), features={})

    def _combine(self, kind: str, outputs: list[Tensor]) -> Tensor:
        stacked = torch.stack([o.float() for o in outputs], dim=0)  # [n, B, C]
        w = self.weights.view(-1, *([1] * (stacked.dim() - 1)))  # [n, 1, 1]
        return TASKS[kind].combine(stacked, w)  # the task type averages where averaging means something
