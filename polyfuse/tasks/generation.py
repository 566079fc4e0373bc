"""Sequence generation (captions, answers as text): target token ids, generated ids, BLEU.

Its labels are encoded by ``polyfuse.data.targets.TextTargetEncoder``; it is not exported, served,
ensembled or explained (generation needs a decoding loop outside the graph).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from polyfuse.tasks.base import TaskType
from polyfuse.tasks.tokens import PAD_ID


class Generation(TaskType):
    name = "generation"
    head = "caption_decoder"
    loss = "sequence_cross_entropy"
    main_metric = ("bleu4", "max")
    metric_names = ("bleu1", "bleu2", "bleu3", "bleu4", "exact")
    deployable = False
    text_targets = True

    def predictions(self, outputs: Any) -> Any:
        return outputs  # generated ids [B, L]

    def eval_predictions(self, head: Any, outputs: Any, fused: Any) -> Any:
        return head.generate(fused, beam_size=1)  # outputs hold teacher-forced logits; greedy decoding is fast

    def labelled(self, targets: Any) -> Any:
        return (targets != PAD_ID).any(dim=-1)  # [B, L] target ids; a row without a target is all PAD

    def metrics(self, out_dim: int) -> Any:
        from polyfuse.tasks.bleu import generation_metrics

        return generation_metrics()

    def metric_values(self, preds: Any, labels: Any) -> dict[str, float]:
        from polyfuse.tasks.bleu import generation_scores

        return generation_scores(preds, labels)

    def head_offers(self, task: Any) -> dict[str, Any]:
        from polyfuse.tasks.tokens import target_max_length

        return {"max_length": target_max_length(task)}

    def result_columns(
        self, name: str, values: np.ndarray, kept: np.ndarray, n_rows: int, classes: Sequence[Any],
        decode: Callable[[Any], list[Any]] | None = None,
    ) -> dict[str, Any]:
        assert decode is not None, "generation results need the target encoder's decode"
        texts: list[Any] = [None] * n_rows  # generated ids -> text; None for rows without a prediction
        for r, text in zip(np.asarray(kept, dtype=np.int64), decode(values) if len(kept) else []):
            texts[int(r)] = text
        return {name: texts}

    def table_columns(
        self, name: str, full: np.ndarray, classes: Sequence[Any], decode: Callable[[Any], list[Any]] | None = None,
    ) -> dict[str, Any]:
        assert decode is not None, "generation results need the target encoder's decode"
        return {name: decode(full)}
