"""Per-row, per-input explanations: how much each input moved a row's prediction (numpy only, no torch).

For every input the batch is predicted once more with that input marked missing (one batched pass per
input). A row's contribution of an input is ``score(all inputs) - score(without the input)``:

- classification: the probability of the class predicted with all inputs;
- regression: the predicted value (mean absolute change for a multi-output target);
- multilabel: the mean absolute change of the label probabilities.

Positive means the input pushed the row towards its prediction; ~0 means the row's prediction does not
depend on it (also when the input is missing in that row). Each task type computes its change
(``TaskType.explain_change``); generation tasks are not explained.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from polyfuse.tasks import TASKS

PredictFn = Callable[[Mapping[str, Any]], Mapping[str, np.ndarray]]


def column_name(task: str, input_name: str) -> str:
    """The predictions-table column of one task's contribution of one input."""
    return f"{task}:explain:{input_name}"


def weight_column(input_name: str) -> str:
    """The predictions-table column of the fusion's own weight of one input."""
    return f"fusion_weight:{input_name}"


def without(batch: Mapping[str, Any], input_name: str) -> dict[str, Any]:
    """A shallow copy of ``batch`` with ``input_name`` marked missing in every row."""
    present = {k: (np.zeros_like(np.asarray(v)) if k == input_name else v) for k, v in batch["present"].items()}
    return {**batch, "present": present}


def explain_batch(
    predict: PredictFn,
    batch: Mapping[str, Any],
    tasks: Mapping[str, str],
    inputs: Sequence[str],
    base: Mapping[str, np.ndarray] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """``{task: {input: [B] contribution}}`` for the explained tasks; ``base`` = predictions with all inputs."""
    explained = {t: TASKS[kind] for t, kind in tasks.items() if TASKS[kind].deployable}
    if not explained:
        return {}
    base = base if base is not None else predict(batch)
    result: dict[str, dict[str, np.ndarray]] = {t: {} for t in explained}
    for name in inputs:
        if name not in batch["present"]:
            continue
        dropped = predict(without(batch, name))
        for task, kind in explained.items():
            base_values, dropped_values = np.asarray(base[task], dtype=np.float64), np.asarray(dropped[task], dtype=np.float64)
            result[task][name] = kind.explain_change(base_values, dropped_values)
    return result


def row_explanation(
    explanation: Mapping[str, Mapping[str, np.ndarray]], i: int, weights: Mapping[str, np.ndarray] | None = None
) -> dict[str, Any]:
    """One row's explanation as plain JSON: ``{"contributions": {task: {input: x}}, "fusion_weights": ...}``."""
    return {
        "contributions": {t: {name: float(v[i]) for name, v in per.items()} for t, per in explanation.items()},
        "fusion_weights": {name: float(w[i]) for name, w in weights.items()} if weights else None,
    }
