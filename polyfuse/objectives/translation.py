"""Cross-modal translation: regress one input's embedding from another's pooled encoder output.

An MLP maps the ``source`` input's pooled output to the ``target``'s embedding: its pooled
encoder output, or (``via: NAME``) its embedding in the shared space of a contrastive
objective of the same run. The target is detached (it is what is predicted, not trained
towards the prediction). Loss ``cosine`` (1 - cosine similarity) or ``mse``, over the rows
where both inputs are present. Evaluated by retrieval: the translated source as query
against the targets' embeddings (see ``polyfuse.retrieval``).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.objectives.contrastive import ContrastiveObjective, RetrievalSpace, _config_error, check_inputs
from polyfuse.registry import OBJECTIVES
from polyfuse.types import EncoderOutput

LOSSES = ("cosine", "mse")


@OBJECTIVES.register("translation", crossmodal=True)
class TranslationObjective(RetrievalSpace):
    """``source`` pooled output -> MLP (``hidden``, ``layers``) -> the ``target``'s (detached) embedding.

    ``via``: a contrastive objective listed before this one, whose space holds the target
    (default: the target encoder's pooled output). ``loss``: ``cosine`` or ``mse``.
    Logs ``loss`` and ``cosine`` (mean cosine similarity of prediction and target).
    """

    def __init__(
        self,
        input_dims: dict[str, int],
        objectives: dict[str, nn.Module],
        source: str,
        target: str,
        via: str | None = None,
        loss: str = "cosine",
        hidden: int = 256,
        layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.inputs = check_inputs([source, target], input_dims)
        self.source, self.target = source, target
        if loss not in LOSSES:
            raise _config_error(f"loss: {loss!r} is not allowed; allowed: {', '.join(LOSSES)}")
        if int(layers) < 1:
            raise _config_error(f"layers: must be a positive integer, got {layers!r}")
        self.loss = loss
        self.via = via
        if via is not None:
            space = objectives.get(via)
            if not isinstance(space, ContrastiveObjective):
                allowed = [n for n, o in objectives.items() if isinstance(o, ContrastiveObjective)]
                raise _config_error(
                    f"via: {via!r} is not a contrastive objective listed before this one; "
                    f"allowed: {', '.join(allowed) or '(none: list a contrastive objective first)'}"
                )
            if target not in space.inputs:
                raise _config_error(f"via: {via!r} does not embed the target input {target!r}")
            out_dim = space.dim
        else:
            out_dim = input_dims[target]
        self.out_dim = int(out_dim)
        widths = [input_dims[source]] + [int(hidden)] * (int(layers) - 1) + [self.out_dim]
        parts: list[nn.Module] = []
        for i in range(len(widths) - 1):
            parts.append(nn.Linear(widths[i], widths[i + 1]))
            if i < len(widths) - 2:
                parts += [nn.GELU(), nn.Dropout(float(dropout))]
        self.net = nn.Sequential(*parts)

    # ------------------------------------------------------------------ space
    def translate(self, pooled: Tensor) -> Tensor:
        """The source's pooled output [B, D_s] -> predicted target embedding [B, D_t]."""
        return self.net(pooled.float())

    def target_embedding(self, model: nn.Module | None, features: Mapping[str, EncoderOutput]) -> Tensor:
        pooled = features[self.target].pooled.float()
        if self.via is None:
            return pooled
        if model is None or self.via not in getattr(model, "objectives", {}):
            raise _config_error(f"via: no objective {self.via!r} in this model")
        return model.objectives[self.via].embed(self.target, pooled)

    def retrieval_embeddings(self, features: Mapping[str, EncoderOutput], model: nn.Module | None = None) -> dict[str, Tensor]:
        return {
            self.source: self.translate(features[self.source].pooled),
            self.target: self.target_embedding(model, features),
        }

    def retrieval_directions(self) -> list[tuple[str, str]]:
        return [(self.source, self.target)]

    # ------------------------------------------------------------------ loss
    def forward(self, model: nn.Module, batch: Mapping[str, Any], out: Any) -> dict[str, Tensor]:
        present = batch["present"]
        rows = present[self.source].bool() & present[self.target].bool()
        prediction = self.translate(out.features[self.source].pooled)  # [B, D_t]
        with torch.no_grad():
            target = self.target_embedding(model, out.features).detach()  # [B, D_t]: predicted, not trained
        if not bool(rows.any()):
            zero = prediction.sum() * 0.0
            return {"loss": zero, "cosine": zero.detach()}
        prediction, target = prediction[rows], target[rows]
        cosine = F.cosine_similarity(prediction, target, dim=-1)  # [n]
        loss = (1.0 - cosine).mean() if self.loss == "cosine" else F.mse_loss(prediction, target)
        return {"loss": loss, "cosine": cosine.mean().detach()}
