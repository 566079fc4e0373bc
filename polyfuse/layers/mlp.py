"""Feed-forward building blocks: the Transformer MLP and a general multi-layer perceptron."""

from __future__ import annotations

from torch import Tensor, nn

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}


def activation(name: str) -> nn.Module:
    """An activation module by name (gelu, relu, silu, tanh)."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(_ACTIVATIONS)}") from None


class FeedForward(nn.Module):
    """Transformer MLP: Linear(dim, dim*mlp_ratio) -> GELU -> Dropout -> Linear -> Dropout."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLP(nn.Module):
    """``layers`` Linear layers in_dim -> hidden -> ... -> out_dim, activation and dropout between.

    ``layers=1`` is a single Linear. ``norm=True`` puts a LayerNorm after each hidden Linear.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int | None = None,
        layers: int = 2,
        dropout: float = 0.0,
        act: str = "gelu",
        norm: bool = False,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"an MLP needs layers >= 1, got {layers}")
        hidden = hidden or out_dim
        widths = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        parts: list[nn.Module] = []
        for i in range(layers):
            parts.append(nn.Linear(widths[i], widths[i + 1]))
            if i < layers - 1:
                if norm:
                    parts.append(nn.LayerNorm(widths[i + 1]))
                parts += [activation(act), nn.Dropout(dropout)]
        self.net = nn.Sequential(*parts)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
