"""What a search leaves to read: trials.csv, trials.md and search.png (metric per trial, importances)."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One dict per trial of the study (every worker's): trial, state, value, params, seconds."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        seconds = None
        if trial.datetime_start is not None and trial.datetime_complete is not None:
            seconds = round((trial.datetime_complete - trial.datetime_start).total_seconds(), 2)
        rows.append({
            "trial": trial.number,
            "state": trial.state.name,
            "value": trial.value if trial.value is not None else _last_reported(trial),
            "params": dict(trial.params),
            "seconds": seconds,
            "note": trial.user_attrs.get("pruned") or trial.user_attrs.get("error") or "",
        })
    return rows


def _last_reported(trial: Any) -> float | None:
    steps = trial.intermediate_values
    return steps[max(steps)] if steps else None


def importances(study: Any) -> dict[str, float]:
    """Optuna's parameter importances over the complete trials; empty below two of them or when undefined."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study, evaluator=evaluator).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. every complete trial has the same params
        return {}


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """trial, state, value, seconds, one column per searched key, note."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row["params"] if k not in keys]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", "state", "value", "seconds", *keys, "note"])
        for row in rows:
            writer.writerow([row["trial"], row["state"], "" if row["value"] is None else row["value"],
                             "" if row["seconds"] is None else row["seconds"],
                             *(row["params"].get(k, "") for k in keys), row["note"]])
    return path


def markdown(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], weights: Mapping[str, float]) -> str:
    """The search as a page: the best trial, parameter importances, then every trial."""
    lines = [f"# Hyperparameter search: {summary['study']}", ""]
    lines.append(f"Metric: `{summary['metric']}` ({summary['direction']}). Trials: {len(rows)} "
                 f"({', '.join(f'{n} {s.lower()}' for s, n in summary['states'].items())}).")
    if summary.get("best_trial") is not None:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in summary["best_params"].items())
        lines += ["", f"Best: trial {summary['best_trial']}, {summary['metric']} = {_fmt(summary['best_value'])} ({params}).",
                  f"Model: `{summary['best_dir'] or 'not on this machine'}`."]
    if weights:
        lines += ["", "## Parameter importances", "", "| parameter | importance |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in weights.items()]
    lines += ["", "## Trials", "", "| trial | state | value | params | seconds |", "|---|---|---|---|---|"]
    for row in rows:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in row["params"].items())
        state = row["state"] + (" (best)" if row["trial"] == summary.get("best_trial") else "")
        lines.append(f"| {row['trial']} | {state} | {_fmt(row['value'])} | {params} | {_fmt(row['seconds'])} |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Mapping[str, Any]], weights: Mapping[str, float], metric: str, maximize: bool, path: Path) -> Path:
    """Metric per trial (pruned trials at their last report) with the best-so-far line; importances beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels = 2 if weights else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4), squeeze=False)
    ax = axes[0][0]
    done = [(r["trial"], r["value"]) for r in rows if r["state"] == "COMPLETE" and _finite(r["value"])]
    pruned = [(r["trial"], r["value"]) for r in rows if r["state"] == "PRUNED" and _finite(r["value"])]
    if done:
        ax.scatter(*zip(*done), color="tab:blue", label="complete", zorder=3)
        best, line = None, []
        for number, value in sorted(done):
            best = value if best is None or (value > best if maximize else value < best) else best
            line.append((number, best))
        ax.step(*zip(*line), where="post", color="tab:red", label="best so far")
    if pruned:
        ax.scatter(*zip(*pruned), color="tab:gray", marker="x", label="pruned (last report)", zorder=3)
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial ({'higher' if maximize else 'lower'} is better)")
    if done or pruned:
        ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    if weights:
        bx = axes[0][1]
        names = list(weights)[::-1]
        bx.barh(names, [weights[n] for n in names], color="tab:green")
        bx.set_xlabel("importance (fANOVA, complete trials)")
        bx.set_title("parameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def write_results(study: Any, out: Path, summary: Mapping[str, Any]) -> dict[str, Path]:
    """trials.csv, trials.md and search.png in ``out``."""
    rows = trial_rows(study)
    weights = importances(study)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trials.md").write_text(markdown(rows, summary, weights), encoding="utf-8")
    return {
        "csv": write_csv(rows, out / "trials.csv"),
        "md": out / "trials.md",
        "png": plot(rows, weights, summary["metric"], summary["direction"] == "maximize", out / "search.png"),
    }
