"""Generated texts for reports, and the generation metrics (BLEU-1..4, exact match: ``polyfuse.tasks.bleu``)."""

from __future__ import annotations

from torch import Tensor

from polyfuse.tasks.bleu import (  # noqa: F401  (read from here too)
    GENERATION_METRICS, ExactMatch, TokenBLEUScore, generation_metrics, generation_scores, id_rows, id_sentences,
)


def generation_samples(
    preds: Tensor, targets: Tensor, vocabulary: list[str], limit: int = 8
) -> list[dict[str, str]]:
    """The first ``limit`` rows as ``{"target": text, "generated": text}`` (for reports)."""
    from polyfuse.data.targets import TextTargetEncoder

    def text(row: list[int]) -> str:
        return TextTargetEncoder.join([vocabulary[i] if 0 <= i < len(vocabulary) else "<?>" for i in row])

    return [{"target": text(t), "generated": text(p)}
            for p, t in zip(id_rows(preds[:limit]), id_rows(targets[:limit]))]
