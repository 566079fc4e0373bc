"""Batch normalization whose batch statistics skip padded time steps."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MaskedBatchNorm(nn.Module):
    """BatchNorm over channel dim 1 of x [B,C,...,T], with statistics from valid steps only.

    ``mask`` [B,T] (True = real step) broadcasts over the middle dims. In training the mean and
    variance come from the valid steps of the batch (padding and missing rows do not bias them)
    and update the running estimates; in eval the running estimates are used, so a row's output
    never depends on its padding. Padded steps of the output are zero.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _shape(self, v: Tensor, x: Tensor) -> Tensor:  # [C] -> [1,C,1,...]
        return v.view(1, -1, *([1] * (x.dim() - 2)))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        m = mask.to(x.dtype).view(mask.shape[0], *([1] * (x.dim() - 2)), mask.shape[1])  # [B,1,...,T]
        m = m.expand(x.shape[0], 1, *x.shape[2:])
        if self.training:
            dims = [d for d in range(x.dim()) if d != 1]
            count = m.sum(dim=dims)  # [1] same for every channel
            mean = (x * m).sum(dim=dims) / count.clamp(min=1.0)
            var = (((x - self._shape(mean, x)) ** 2) * m).sum(dim=dims) / count.clamp(min=1.0)
            with torch.no_grad():
                rate = self.momentum * (count > 0).to(x.dtype)  # skip the update on an all-padding batch
                unbiased = var * count / (count - 1.0).clamp(min=1.0)
                self.running_mean.mul_(1 - rate).add_(rate * mean.detach())
                self.running_var.mul_(1 - rate).add_(rate * unbiased.detach())
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - self._shape(mean, x)) * torch.rsqrt(self._shape(var, x) + self.eps)
        return (y * self._shape(self.weight, x) + self._shape(self.bias, x)) * m
