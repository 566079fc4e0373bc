"""Teacher-forcing loss of generation tasks: cross-entropy of next-token logits over shifted targets."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from polyfuse.data.targets import PAD_ID
from polyfuse.objectives.base import Objective
from polyfuse.registry import OBJECTIVES


@OBJECTIVES.register("sequence_cross_entropy", task="generation")
class SequenceCrossEntropy(Objective):
    """Mean cross-entropy of ``outputs`` [B, L-1, V] (the logits after each target prefix)
    against ``targets[:, 1:]`` ([B, L] ids, BOS first); PAD positions are ignored.

    A batch without any target token gives a zero that keeps a gradient path.
    """

    def __init__(self, label_smoothing: float = 0.0, pad_id: int = PAD_ID) -> None:
        super().__init__()
        if not 0.0 <= float(label_smoothing) < 1.0:
            from polyfuse.config import ConfigError

            raise ConfigError(f"label_smoothing: must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.pad_id = int(pad_id)

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        following = targets[:, 1:].long()  # [B, L-1]: the token each position must predict
        if outputs.shape[:2] != following.shape:
            raise ValueError(
                f"logits {tuple(outputs.shape)} do not fit targets {tuple(targets.shape)} (expected [B, L-1, V])"
            )
        per_token = F.cross_entropy(
            outputs.transpose(1, 2), following, ignore_index=self.pad_id, reduction="none",
            label_smoothing=self.label_smoothing,
        )  # [B, L-1]; 0 at PAD
        real = (following != self.pad_id).to(per_token.dtype)
        return (per_token * real).sum() / real.sum().clamp(min=1.0)
