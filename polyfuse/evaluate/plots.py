"""PNG plots for reports: confusion matrix, training curves, modality contribution."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion(matrix: np.ndarray, classes: Sequence[Any], path: Path, title: str) -> Path:
    n = len(classes)
    size = min(12.0, 2.5 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    labels = [str(c)[:14] for c in classes]
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(history: list[dict[str, float]], path: Path, metric_keys: Sequence[str]) -> Path | None:
    if not history:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = [row["epoch"] + 1 for row in history]
    for key in ("train/loss", "valid/loss"):
        values = [row.get(key) for row in history]
        if any(v is not None for v in values):
            axes[0].plot(epochs, [np.nan if v is None else v for v in values], marker="o", label=key)
    axes[0].set_xlabel("epoch")
    axes[0].set_title("loss")
    axes[0].legend()
    for key in metric_keys:
        values = [row.get(key) for row in history]
        if any(v is not None for v in values):
            axes[1].plot(epochs, [np.nan if v is None else v for v in values], marker="o", label=key)
    axes[1].set_xlabel("epoch")
    axes[1].set_title("validation metrics")
    if axes[1].lines:
        axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bars(values: dict[str, float], path: Path, title: str, ylabel: str) -> Path:
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(values) + 2), 3.4))
    names = list(values)
    ax.bar(names, [values[n] for n in names], color="#4C72B0")
    for i, n in enumerate(names):
        ax.text(i, values[n], f"{values[n]:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
