"""Recurrent layers over right-padded sequences, without ``pack_padded_sequence`` (ONNX friendly).

The forward direction never sees padding before a valid step, because padding comes last. The
backward direction runs on each sequence reversed *within its length* (an index gather), so it
starts at the last valid step and padding stays behind the valid states too.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyfuse.layers.pooling import gather_last, lengths_to_mask

_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


def reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse x [B,T,...] along T inside each row's first ``lengths`` steps; padding stays put.

    Applying it twice gives x back.
    """
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # [1,T]
    lengths = lengths.long().unsqueeze(1)  # [B,1]
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)  # [B,T]
    index = index.view(index.shape[0], index.shape[1], *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


class MaskedRNN(nn.Module):
    """Stacked (optionally bidirectional) GRU/LSTM over right-padded sequences.

    ``forward(x [B,T,F], lengths [B]) -> (outputs [B,T,H*dirs], last [B,H*dirs])``. ``outputs``
    are zero at padded steps; ``last`` is the final valid state of each direction (forward: at
    step ``length-1``; backward: at step 0), zeros for empty rows.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        cell: str = "gru",
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in _CELLS:
            raise ValueError(f"unknown RNN cell {cell!r}; allowed: {', '.join(_CELLS)}")
        if layers < 1:
            raise ValueError(f"an RNN needs layers >= 1, got {layers}")
        rnn = _CELLS[cell]
        self.hidden_size = hidden_size
        self.bidirectional = bidirectional
        self.directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.directions
        sizes = [input_size] + [self.output_size] * (layers - 1)
        self.forward_layers = nn.ModuleList(rnn(s, hidden_size, batch_first=True) for s in sizes)
        self.backward_layers = nn.ModuleList(
            rnn(s, hidden_size, batch_first=True) for s in (sizes if bidirectional else [])
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        keep = lengths_to_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)  # [B,T,1]
        x = x * keep
        for i, layer in enumerate(self.forward_layers):
            if i > 0:
                x = self.drop(x)
            out, _ = layer(x)
            if self.bidirectional:
                back, _ = self.backward_layers[i](reverse_within_length(x, lengths))
                out = torch.cat([out, reverse_within_length(back, lengths)], dim=-1)
            x = out * keep
        last_forward = gather_last(x[..., : self.hidden_size], lengths)
        if not self.bidirectional:
            return x, last_forward
        last_backward = x[:, 0, self.hidden_size :]  # zero for empty rows (masked above)
        return x, torch.cat([last_forward, last_backward], dim=-1)
