"""The cross-validation fits of ``train.solver: convex``, one (fold, class weighting) pair per job.

Kept free of torch and of the rest of polyfuse, so that joblib's worker processes start in a
fraction of a second: scikit-learn's L-BFGS and Ridge fits run on one core, and the folds are
independent, so ``n_jobs`` workers cut the cross-validation's wall time about ``n_jobs``-fold.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def estimator(kind: str, value: float, class_weight: dict[int, float] | None, seed: int, warm: bool = False) -> Any:
    """``LogisticRegression(C=value)`` for ``kind`` "logistic", else ``Ridge(alpha=value)``."""
    from sklearn.linear_model import LogisticRegression, Ridge

    if kind == "logistic":
        return LogisticRegression(C=value, class_weight=class_weight, max_iter=2000, random_state=seed, warm_start=warm)
    return Ridge(alpha=value, random_state=seed)


def predict(fitted: Any, x: Any, kind: str, num_classes: int) -> np.ndarray:
    """Probabilities [N, num_classes] (classification) or standardized values [N]."""
    if kind != "logistic":
        return np.asarray(fitted.predict(x), dtype=np.float64)
    probs = np.zeros((x.shape[0], num_classes))
    probs[:, fitted.classes_.astype(int)] = fitted.predict_proba(x)
    return probs


def chain_predictions(
    kind: str, chain: Sequence[tuple[float, dict[int, float] | None]], seed: int,
    x_train: Any, y_train: np.ndarray, x_valid: Any, num_classes: int,
) -> list[np.ndarray]:
    """Predictions on ``x_valid`` for each (strength, class weights) of ``chain``, strongest penalty
    first: each fit starts from the previous strength's solution (warm start)."""
    fitted = estimator(kind, chain[0][0], chain[0][1], seed, warm=True)
    out = []
    for value, _ in chain:
        fitted.set_params(**{"C" if kind == "logistic" else "alpha": value}).fit(x_train, y_train)
        out.append(predict(fitted, x_valid, kind, num_classes))
    return out
