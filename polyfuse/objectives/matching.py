"""Image-text matching (ITM, any pair of inputs) on the fused single-stream representation, with hard negatives.

For the rows where both inputs are present, the positives are the true pairs (the model's
own fused output). Each row also gets two negatives, made by re-running the fusion with the
features of one input swapped for another row's: a HARD negative, drawn with probability
softmax(similarity) from the contrastive space (ALBEF-style; the most similar one when not
training). Rows whose content is identical to the row's own (e.g. the same caption) are never
drawn. A binary head on the fused pooled output tells matched from mismatched; loss = binary CE.

The similarities come from a contrastive objective of the same run (``contrastive: NAME``, or
found by itself among the objectives listed before this one); without one, this objective
keeps projections of its own, trained with InfoNCE as part of its loss (logged as ``itc``).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.objectives.contrastive import ContrastiveObjective, _config_error, check_inputs
from polyfuse.registry import OBJECTIVES
from polyfuse.types import EncoderOutput

NEGATIVES = ("hard", "random")


def select(features: EncoderOutput, index: Tensor) -> EncoderOutput:
    """The rows ``index`` [n] of an encoder output."""
    return EncoderOutput(tokens=features.tokens[index], pooled=features.pooled[index], mask=features.mask[index])


def concat(parts: list[EncoderOutput]) -> EncoderOutput:
    return EncoderOutput(
        tokens=torch.cat([p.tokens for p in parts]),
        pooled=torch.cat([p.pooled for p in parts]),
        mask=torch.cat([p.mask for p in parts]),
    )


def same_content(inputs: Mapping[str, Tensor], index: Tensor) -> Tensor:
    """Bool [n, n]: rows ``index`` of an input whose tensors are identical (duplicates are not negatives)."""
    flat = torch.cat([v[index].reshape(len(index), -1).float() for _, v in sorted(inputs.items())], dim=1)  # [n, F]
    _, groups = torch.unique(flat, dim=0, return_inverse=True)
    return groups[:, None] == groups[None, :]


def draw_negatives(sim: Tensor, forbidden: Tensor, scale: Tensor | float, sample: bool, generator: Any = None) -> Tensor:
    """For each row of ``sim`` [n, n], a column that is not ``forbidden``: sampled from softmax(scale * sim)
    (``sample``) or the most similar one; -1 where every column is forbidden."""
    logits = (sim * scale).masked_fill(forbidden, float("-inf"))
    usable = ~forbidden.all(dim=1)
    choice = torch.full((sim.shape[0],), -1, dtype=torch.long, device=sim.device)
    if not bool(usable.any()):
        return choice
    rows = logits[usable]
    if sample:
        probs = torch.softmax(rows.float(), dim=1)
        picked = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    else:
        picked = rows.argmax(dim=1)
    choice[usable] = picked
    return choice


@OBJECTIVES.register("itm", crossmodal=True)
class MatchingObjective(nn.Module):
    """Matched / mismatched pair classification on the fused output, with hard negatives for both inputs.

    ``inputs``: the two inputs paired (default: the contrastive space's first two, else the
    first two inputs). ``contrastive``: the objective whose space ranks negatives (default:
    found among the objectives listed before; none = own projections of width ``dim`` trained
    with InfoNCE). ``negatives``: ``hard`` (sampled by similarity) or ``random``. ``hidden``:
    head MLP width (0 = one Linear). Logs ``loss``, ``acc`` (and ``itc`` with own projections).
    """

    def __init__(
        self,
        input_dims: dict[str, int],
        fusion_dim: int | None,
        objectives: dict[str, nn.Module],
        inputs: list[str] | None = None,
        contrastive: str | None = None,
        negatives: str = "hard",
        dim: int = 128,
        hidden: int = 0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if fusion_dim is None:
            raise _config_error("fusion: itm needs a fusion with an output width (output_dim)")
        if negatives not in NEGATIVES:
            raise _config_error(f"negatives: {negatives!r} is not allowed; allowed: {', '.join(NEGATIVES)}")
        self.negatives = negatives
        space = None
        if contrastive is not None:
            space = objectives.get(contrastive)
            if contrastive in objectives and not isinstance(space, ContrastiveObjective):
                raise _config_error(f"contrastive: objective {contrastive!r} is not a contrastive objective")
        if inputs is None:
            inputs = list(space.inputs[:2]) if space is not None else list(input_dims)[:2]
        self.inputs = check_inputs(inputs, input_dims)
        if len(self.inputs) != 2:
            raise _config_error(f"inputs: itm pairs exactly two inputs, got {list(self.inputs)}")
        if contrastive is None:  # one listed before that covers both inputs?
            contrastive = next(
                (n for n, o in objectives.items() if isinstance(o, ContrastiveObjective) and set(self.inputs) <= set(o.inputs)),
                None,
            )
        elif space is not None and not set(self.inputs) <= set(space.inputs):
            raise _config_error(f"contrastive: {contrastive!r} does not embed both {list(self.inputs)}")
        self.contrastive = contrastive
        # own space only when no contrastive objective of the run can rank the negatives
        self.itc = ContrastiveObjective(input_dims, list(self.inputs), dim=dim) if contrastive is None else None
        # the head also reads the elementwise product of the two inputs' projected pooled features:
        # a head on the fused vector alone is close to additive in the two inputs, and an additive
        # score cannot tell (a_i, b_i) from (a_i, b_j) when every a and b appears in both (it stayed
        # at the class prior); the product makes "do these two agree" one linear read-out away
        a_name, b_name = self.inputs
        self.pair = nn.ModuleDict({a_name: nn.Linear(input_dims[a_name], dim), b_name: nn.Linear(input_dims[b_name], dim)})
        width = int(fusion_dim) + int(dim)
        self.head = (
            nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
            if hidden
            else nn.Linear(width, 1)
        )

    def agreement(self, pooled_a: Tensor, pooled_b: Tensor) -> Tensor:
        """[n, D_a], [n, D_b] -> [n, dim]: the product of the two inputs' unit-norm projections (times sqrt(dim))."""
        a, b = self.inputs
        pa = F.normalize(self.pair[a](pooled_a.float()), dim=-1)
        pb = F.normalize(self.pair[b](pooled_b.float()), dim=-1)
        return pa * pb * (pa.shape[-1] ** 0.5)

    def match_logits(self, fused: Tensor, pooled_a: Tensor, pooled_b: Tensor) -> Tensor:
        """Matched-pair logits [n] from the fused output [n, D] and the two inputs' pooled features."""
        return self.head(torch.cat([fused.float(), self.agreement(pooled_a, pooled_b)], dim=-1)).squeeze(-1)

    def space(self, model: nn.Module) -> ContrastiveObjective:
        if self.itc is not None:
            return self.itc
        objectives = getattr(model, "objectives", {})
        if self.contrastive not in objectives or not isinstance(objectives[self.contrastive], ContrastiveObjective):
            raise _config_error(f"contrastive: no contrastive objective {self.contrastive!r} in this model")
        return objectives[self.contrastive]

    def forward(self, model: nn.Module, batch: Mapping[str, Any], out: Any) -> dict[str, Tensor]:
        a, b = self.inputs
        present = {k: v.bool() for k, v in batch["present"].items()}
        features = out.features
        result: dict[str, Tensor] = {}
        extra = None
        if self.itc is not None:
            itc = self.itc(model, batch, out)
            extra, result["itc"] = itc["loss"], itc["loss"].detach()
        index = (present[a] & present[b]).nonzero().squeeze(1)  # rows with both inputs
        n = int(index.numel())
        if n < 2:
            zero = sum(p.sum() for p in self.head.parameters()) * 0.0
            loss = zero if extra is None else extra + zero
            return {"loss": loss, "acc": zero.detach(), **result}

        space = self.space(model)
        with torch.no_grad():
            sim = space.embed(a, features[a].pooled[index]) @ space.embed(b, features[b].pooled[index]).T  # [n, n]
            if self.negatives == "random":
                sim = torch.zeros_like(sim)
            generator = None
            if not self.training:  # the same negatives at every evaluation
                generator = torch.Generator(device=sim.device).manual_seed(int(batch["row"].sum()))
            sample = self.training or self.negatives == "random"
            scale = space.logit_scale().detach()
            neg_b = draw_negatives(sim, same_content(batch["inputs"][b], index), scale, sample, generator)  # for each a
            neg_a = draw_negatives(sim.T, same_content(batch["inputs"][a], index), scale, sample, generator)  # for each b
        keep_b = (neg_b >= 0).nonzero().squeeze(1)
        keep_a = (neg_a >= 0).nonzero().squeeze(1)
        if keep_a.numel() + keep_b.numel() == 0:  # every row identical: nothing to tell apart
            zero = sum(p.sum() for p in self.head.parameters()) * 0.0
            loss = zero if extra is None else extra + zero
            return {"loss": loss, "acc": zero.detach(), **result}

        # negatives: (a_i, b_neg(i)) for kept i, then (a_neg(j), b_j) for kept j; other inputs follow row i / j
        swapped: dict[str, EncoderOutput] = {}
        swapped_present: dict[str, Tensor] = {}
        rows_b, rows_a = index[keep_b], index[keep_a]
        for name, feats in features.items():
            first = index[neg_b[keep_b]] if name == b else rows_b
            second = index[neg_a[keep_a]] if name == a else rows_a
            swapped[name] = concat([select(feats, first), select(feats, second)])
            swapped_present[name] = torch.cat([present[name][first], present[name][second]])
        negative = model.fusion(swapped, swapped_present).pooled  # [n_neg, D]
        positive = out.fused.pooled[index]  # [n, D]
        agree = torch.cat([
            self.agreement(features[a].pooled[index], features[b].pooled[index]),
            self.agreement(swapped[a].pooled, swapped[b].pooled),
        ])  # [n + n_neg, dim]
        logits = self.head(torch.cat([torch.cat([positive, negative]).float(), agree], dim=-1)).squeeze(-1)
        labels = torch.cat([logits.new_ones(n), logits.new_zeros(negative.shape[0])])
        # positives and negatives weigh the same (n vs up to 2n rows): the logit's sign then means
        # "more likely matched than not" whatever the negatives' count
        weights = torch.cat([logits.new_full((n,), 0.5 / n), logits.new_full((negative.shape[0],), 0.5 / negative.shape[0])])
        loss = (F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * weights).sum()
        result["acc"] = ((logits > 0).float() == labels).float().mean().detach()
        result["loss"] = loss if extra is None else loss + extra
        return result


@torch.no_grad()
def matching_accuracy(model: nn.Module, batches: Any, name: str, seed: int = 0) -> dict[str, float]:
    """Held-out ITM accuracy with one negative per positive: each row's pair, and the row's first input
    with the second input of another row (a different one: never the same content), drawn at random.

    Returns ``acc`` (threshold 0.5 over 2n pairs), ``positives`` / ``negatives`` (accuracy on each) and ``pairs``.
    """
    objective = model.objectives[name]
    if not isinstance(objective, MatchingObjective):
        raise _config_error(f"{name}: not an itm objective")
    a, b = objective.inputs
    generator = torch.Generator().manual_seed(seed)
    right_pos = right_neg = total = 0
    model.eval()
    for batch in batches:
        present = {k: v.bool() for k, v in batch["present"].items()}
        index = (present[a] & present[b]).nonzero().squeeze(1)
        if index.numel() < 2:
            continue
        out = model(batch["inputs"], batch["present"])
        features = out.features
        same = same_content(batch["inputs"][b], index)
        sim = torch.zeros(len(index), len(index))
        neg_b = draw_negatives(sim, same, 1.0, True, generator)
        keep = (neg_b >= 0).nonzero().squeeze(1)
        rows, partner = index[keep], index[neg_b[keep]]
        swapped = {n: select(f, partner if n == b else rows) for n, f in features.items()}
        swapped_present = {n: present[n][partner if n == b else rows] for n in features}
        negative = model.fusion(swapped, swapped_present).pooled
        pos_logits = objective.match_logits(out.fused.pooled[rows], features[a].pooled[rows], features[b].pooled[rows])
        neg_logits = objective.match_logits(negative, features[a].pooled[rows], features[b].pooled[partner])
        right_pos += int((pos_logits > 0).sum())
        right_neg += int((neg_logits <= 0).sum())
        total += int(len(rows))
    if total == 0:
        return {"acc": float("nan"), "positives": float("nan"), "negatives": float("nan"), "pairs": 0}
    return {"acc": (right_pos + right_neg) / (2 * total), "positives": right_pos / total, "negatives": right_neg / total,
            "pairs": 2 * total}
