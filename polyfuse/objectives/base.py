"""The objective contract: (outputs, targets) -> scalar loss."""

from __future__ import annotations

from torch import Tensor, nn


class Objective(nn.Module):
    """Base class of task losses: ``forward(outputs, targets) -> scalar``.

    Classification targets use -100 for rows without a label; those rows are ignored.
    """

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
