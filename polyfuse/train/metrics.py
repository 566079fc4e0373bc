"""Task metrics (torchmetrics) by task type, and which metric decides "best"."""

from __future__ import annotations

from polyfuse.tasks import TASKS

#: metric that ranks models per task type, and whether higher is better
MAIN_METRIC: dict[str, tuple[str, str]] = {name: t.main_metric for name, t in TASKS.items()}


def default_monitor(tasks: dict) -> tuple[str, str]:
    """The validation metric that picks the best checkpoint: the first task's main metric."""
    if not tasks:
        return "valid/loss", "min"
    name, task = next(iter(tasks.items()))
    metric, mode = MAIN_METRIC[task.type]
    return f"valid/{name}/{metric}", mode


def monitor_mode(monitor: str) -> str:
    """'min' for losses and errors, 'max' for scores."""
    last = monitor.rsplit("/", 1)[-1]
    return "min" if last in ("loss", "mae", "rmse", "mse") else "max"
