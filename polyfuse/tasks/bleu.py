"""Metrics of generated token ids against target ids: BLEU-1..4 (torchmetrics) and exact match.

Both sides are id rows as the data and the search give them (a leading BOS dropped, cut
at the first EOS, PAD ignored). Each id is one word of the target vocabulary
(``polyfuse.data.targets``), so BLEU over ids is BLEU over the words. The generation task type's
metrics (``polyfuse.tasks.generation``).

BLEU-n is corpus BLEU: n-gram matches and the brevity penalty summed over all rows, the
geometric mean of the 1..n-gram precisions with uniform weights. Two standard adjustments keep
it meaningful for texts shorter than n words (captions such as "a red circle", one-word
answers), where plain BLEU-4 is 0 whatever the output:

- effective order: orders longer than the longest target text are left out of the mean (no
  target holds such n-grams), so BLEU-4 of 3-word captions is their BLEU-3 and that of
  one-word answers their BLEU-1;
- add-one smoothing of the 2..n-gram precisions (Lin & Och 2004; NLTK's ``method2``), so one
  order without any match does not zero the score. Generated texts without any n-gram of an
  order the targets have (all too short) still score 0, as in plain BLEU.

On a corpus of longer texts neither changes the value noticeably. The n-gram counting is
torchmetrics' ``BLEUScore``; only the final formula is ours (torchmetrics' ``smooth=True``
still returns 0 as soon as one order has no match).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.text import BLEUScore

from polyfuse.tasks.tokens import strip_special

#: metric names, in report order
GENERATION_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "exact")


def id_rows(ids: Tensor) -> list[list[int]]:
    """[N, L] ids -> the word ids of each row."""
    return [strip_special(row) for row in ids.detach().cpu().tolist()]


def id_sentences(ids: Tensor) -> list[str]:
    """[N, L] ids -> one string of space-separated word ids per row (what BLEU tokenizes)."""
    return [" ".join(map(str, row)) for row in id_rows(ids)]


class TokenBLEUScore(BLEUScore):
    """Smoothed corpus BLEU-n of generated ids [N, L] against one target row [N, L] each."""

    def __init__(self, n_gram: int = 4) -> None:
        super().__init__(n_gram=n_gram, smooth=True)
        self.add_state("longest_target", default=torch.tensor(0.0), dist_reduce_fx="max")

    def update(self, preds: Tensor, target: Tensor) -> None:  # type: ignore[override]
        references = id_rows(target)
        super().update(id_sentences(preds), [[" ".join(map(str, ref))] for ref in references])
        longest = float(max((len(ref) for ref in references), default=0))
        self.longest_target = torch.clamp(self.longest_target, min=longest)

    def compute(self) -> Tensor:
        numerator, denominator = self.numerator.double(), self.denominator.double()  # [n] matches / n-grams
        if float(numerator[0]) == 0.0:
            return torch.tensor(0.0)
        order = max(1, min(self.n_gram, int(self.longest_target)))  # effective order
        numerator, denominator = numerator[:order], denominator[:order]
        if bool((denominator == 0).any()):  # the outputs are too short to hold an order the targets have
            return torch.tensor(0.0)
        precision = (numerator + 1.0) / (denominator + 1.0)
        precision[0] = numerator[0] / denominator[0]
        log_mean = precision.log().mean()
        hyp, ref = float(self.preds_len), float(self.target_len)
        brevity = 1.0 if hyp > ref else math.exp(1.0 - ref / hyp)
        return (brevity * log_mean.exp()).float()


class ExactMatch(Metric):
    """Fraction of rows whose generated words equal the target words exactly."""

    full_state_update = False
    higher_is_better = True

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        matches = [p == t for p, t in zip(id_rows(preds), id_rows(target))]
        self.correct += float(sum(matches))
        self.total += float(len(matches))

    def compute(self) -> Tensor:
        return self.correct / self.total.clamp(min=1.0)


def generation_metrics() -> MetricCollection:
    """bleu1..bleu4 and exact, updated with (generated ids [N, L], target ids [N, L'])."""
    metrics: dict[str, Metric] = {f"bleu{n}": TokenBLEUScore(n_gram=n) for n in range(1, 5)}
    metrics["exact"] = ExactMatch()
    return MetricCollection(metrics, compute_groups=False)


def generation_scores(preds: Tensor, targets: Tensor) -> dict[str, float]:
    """bleu1..bleu4 and exact of generated ids against target ids, as floats."""
    collection = generation_metrics()
    collection.update(preds, targets)
    return {name: float(value) for name, value in collection.compute().items()}


__all__ = ["ExactMatch", "GENERATION_METRICS", "TokenBLEUScore", "generation_metrics", "generation_scores", "id_sentences"]
