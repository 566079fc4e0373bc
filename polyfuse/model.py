"""MultimodalModel: encoders -> fusion -> heads. Built parts in, no config reading inside."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from polyfuse.encoders.base import Encoder
from polyfuse.fusion.base import Fusion
from polyfuse.types import EncoderOutput, FusionOutput, ModelOutput


class MultimodalModel(nn.Module):
    """One encoder per input, one fusion, one head per task."""

    def __init__(
        self,
        encoders: Mapping[str, Encoder],
        fusion: Fusion,
        heads: Mapping[str, nn.Module],
        objectives: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        missing = [m for m in fusion.modalities if m not in encoders]
        if missing:
            raise ValueError(f"fusion expects inputs {missing} that have no encoder")
        self.encoders = nn.ModuleDict({name: encoders[name] for name in fusion.modalities})
        self.fusion = fusion
        self.heads = nn.ModuleDict(dict(heads))
        # pretraining / auxiliary objectives with weights of their own (projection heads, ITM, MLM...);
        # kept in the model so that checkpoints carry them (retrieval needs the projections).
        self.objectives = nn.ModuleDict(dict(objectives or {}))

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.encoders.keys())

    def encode(self, inputs: Mapping[str, Mapping[str, Tensor]]) -> dict[str, EncoderOutput]:
        """Run every encoder on its input tensors."""
        return {name: enc(dict(inputs[name])) for name, enc in self.encoders.items()}

    def fuse(
        self, inputs: Mapping[str, Mapping[str, Tensor]], present: Mapping[str, Tensor]
    ) -> tuple[dict[str, EncoderOutput], FusionOutput]:
        features = self.encode(inputs)
        present = {name: present[name].bool() for name in self.encoders}
        return features, self.fusion(features, present)

    def apply_head(self, head: nn.Module, fused: FusionOutput, targets: Tensor | None = None) -> Tensor:
        """A head on the fused features; decision-level fusions average it over branches.

        A head with ``needs_fused = True`` (a text decoder) gets the whole FusionOutput and the
        task's ``targets`` (teacher forcing in training; None = generate) instead.
        """
        if getattr(head, "needs_fused", False):
            return head(fused, targets=targets)
        if fused.branches is None:
            return head(fused.pooled)
        outs = torch.stack([head(b) for b in fused.branches.values()], dim=1)  # [B, n, C]
        weights = fused.branch_weights
        if weights is None:
            weights = outs.new_full(outs.shape[:2], 1.0 / outs.shape[1])
        return (outs * weights.unsqueeze(-1).to(outs.dtype)).sum(dim=1)

    def forward(
        self,
        inputs: Mapping[str, Mapping[str, Tensor]],
        present: Mapping[str, Tensor],
        targets: Mapping[str, Tensor] | None = None,
    ) -> ModelOutput:
        """``targets`` (the batch's labels) reach only heads that read them (generation heads)."""
        features, fused = self.fuse(inputs, present)
        targets = targets or {}
        outputs = {task: self.apply_head(head, fused, targets.get(task)) for task, head in self.heads.items()}
        return ModelOutput(outputs=outputs, fused=fused, features=features)
