"""Contrastive shared space (CLIP-style): projection heads + symmetric InfoNCE with a learnable temperature.

Every listed input's pooled encoder output is projected to a shared, L2-normalized space of
width ``dim``. Rows of a batch are each other's negatives (in-batch negatives); a row takes
part in the loss of a pair of inputs only when both are present. With more than two inputs
the loss is the mean over all pairs, in one space (audio, image and text side by side).

Objectives whose embeddings support retrieval derive from ``RetrievalSpace``: retrieval
evaluation, the index and search use them without knowing which objective made them.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.registry import OBJECTIVES
from polyfuse.types import EncoderOutput


def _config_error(message: str) -> Exception:
    from polyfuse.config import ConfigError

    return ConfigError(message)


def check_inputs(inputs: Sequence[str] | None, input_dims: Mapping[str, int], at_least: int = 2) -> tuple[str, ...]:
    """Validated input names (default: every input); a ConfigError names the allowed ones."""
    names = tuple(input_dims) if inputs is None else tuple(inputs)
    if isinstance(inputs, str):
        raise _config_error(f"inputs: expected a list of input names, got {inputs!r}")
    unknown = [n for n in names if n not in input_dims]
    if unknown:
        raise _config_error(f"inputs: {unknown[0]!r} is not an input; allowed: {', '.join(input_dims)}")
    if len(set(names)) != len(names) or len(names) < at_least:
        raise _config_error(
            f"inputs: expected at least {at_least} different inputs, got {list(names)}; allowed: {', '.join(input_dims)}"
        )
    return names


class ProjectionHead(nn.Module):
    """Encoder width -> shared width: Linear (``hidden=0``) or Linear-GELU-Linear; output L2-normalized."""

    def __init__(self, in_dim: int, dim: int, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
            )
        else:
            self.net = nn.Linear(in_dim, dim)

    def forward(self, x: Tensor) -> Tensor:  # [B, in_dim] -> [B, dim], unit norm
        return F.normalize(self.net(x.float()), dim=-1)


def info_nce(a: Tensor, b: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE of matched rows of ``a`` [N,D] and ``b`` [N,D] (unit norm) -> (loss, in-batch accuracy).

    Row i of ``a`` should score highest with row i of ``b`` (and the other way round);
    every other row of the batch is a negative.
    """
    logits = scale * a @ b.T  # [N, N]
    target = torch.arange(a.shape[0], device=a.device)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    with torch.no_grad():
        acc = 0.5 * ((logits.argmax(dim=1) == target).float().mean() + (logits.argmax(dim=0) == target).float().mean())
    return loss, acc


class RetrievalSpace(nn.Module):
    """An objective whose embeddings rank rows of one input against rows of another.

    ``retrieval_embeddings(features, model)`` gives one embedding per key (keys are input names:
    the embedding of that input's rows; ``model`` is the MultimodalModel, for objectives that
    read another objective's space); ``retrieval_directions()`` lists (query key, target key)
    pairs that make sense; similarity is the cosine of the two embeddings.
    """

    inputs: tuple[str, ...]

    def retrieval_embeddings(
        self, features: Mapping[str, EncoderOutput], model: nn.Module | None = None
    ) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def retrieval_directions(self) -> list[tuple[str, str]]:  # pragma: no cover
        raise NotImplementedError


@OBJECTIVES.register("contrastive", crossmodal=True)
class ContrastiveObjective(RetrievalSpace):
    """Shared embedding space of ``inputs`` (default: all) by symmetric InfoNCE with in-batch negatives.

    ``dim``: shared width; ``hidden``: MLP projection width (0 = one Linear). The temperature
    starts at ``temperature`` and is learned (``learn_temperature``) as a log logit-scale,
    clamped to [``min_temperature``, ``max_temperature``] (logit scale <= 100 by default).
    Logs ``loss``, ``temperature`` and in-batch retrieval ``acc``.
    """

    def __init__(
        self,
        input_dims: dict[str, int],
        inputs: list[str] | None = None,
        dim: int = 128,
        hidden: int = 0,
        dropout: float = 0.0,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.inputs = check_inputs(inputs, input_dims)
        if int(dim) < 1:
            raise _config_error(f"dim: must be a positive integer, got {dim!r}")
        if not 0.0 < float(min_temperature) <= float(temperature) <= float(max_temperature):
            raise _config_error(
                "temperature: need 0 < min_temperature <= temperature <= max_temperature, got "
                f"{min_temperature} / {temperature} / {max_temperature}"
            )
        self.dim = int(dim)
        self.projections = nn.ModuleDict(
            {name: ProjectionHead(input_dims[name], self.dim, int(hidden), float(dropout)) for name in self.inputs}
        )
        # log of the logit scale 1/temperature; bounds clamp it
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / float(temperature))), requires_grad=learn_temperature)
        self.min_log_scale = math.log(1.0 / float(max_temperature))
        self.max_log_scale = math.log(1.0 / float(min_temperature))
        self.pairs: list[tuple[str, str]] = list(itertools.combinations(self.inputs, 2))

    # ------------------------------------------------------------------ space
    def logit_scale(self) -> Tensor:
        """1 / temperature, within the bounds."""
        return self.log_scale.clamp(self.min_log_scale, self.max_log_scale).exp()

    def keep_in_bounds(self) -> None:
        """Clamp the parameter itself (CLIP-style) so it never drifts out where its gradient is zero.

        Through ``.data``, which autograd does not track: graphs that already used it stay valid.
        """
        self.log_scale.data.clamp_(self.min_log_scale, self.max_log_scale)

    def embed(self, name: str, pooled: Tensor) -> Tensor:
        """An input's pooled encoder output [B, D_in] -> its unit-norm shared embedding [B, dim]."""
        return self.projections[name](pooled)

    def retrieval_embeddings(
        self, features: Mapping[str, EncoderOutput], model: nn.Module | None = None
    ) -> dict[str, Tensor]:
        return {name: self.embed(name, features[name].pooled) for name in self.inputs}

    def retrieval_directions(self) -> list[tuple[str, str]]:
        return [d for a, b in self.pairs for d in ((a, b), (b, a))]

    # ------------------------------------------------------------------ loss
    def forward(self, model: nn.Module, batch: Mapping[str, Any], out: Any) -> dict[str, Tensor]:
        present = batch["present"]
        z = self.retrieval_embeddings(out.features)  # name -> [B, dim]
        if self.training:
            self.keep_in_bounds()
        scale = self.logit_scale()
        losses, accs = [], []
        for a, b in self.pairs:
            rows = present[a].bool() & present[b].bool()  # a pair counts only where both are there
            if int(rows.sum()) < 2:
                continue
            loss, acc = info_nce(z[a][rows], z[b][rows], scale)
            losses.append(loss)
            accs.append(acc)
        if losses:
            loss = torch.stack(losses).mean()
            acc = torch.stack(accs).mean()
        else:  # no usable pair in this batch: a zero that keeps the graph
            loss = sum(v.sum() for v in z.values()) * 0.0 + scale * 0.0
            acc = loss.detach()
        return {"loss": loss, "temperature": (1.0 / scale).detach(), "acc": acc}
