"""Evaluation after training: metrics per split, confusion matrices, curves, modality contribution,
written as ``report.md`` + PNGs beside the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader

from polyfuse.config import Config
from polyfuse.encoders.extraction_memo import remembering_extractions
from polyfuse.evaluate.contribution import modality_contribution
from polyfuse.evaluate.metrics import confusion, summarize
from polyfuse.evaluate.plots import plot_bars, plot_confusion, plot_curves
from polyfuse.evaluate.predict import collect_predictions
from polyfuse.tasks import TASKS


def loader_factory(dataset: Any, collate: Any, batch_size: int):  # noqa: ANN201
    """A function returning a fresh in-order loader over ``dataset`` each call."""

    def make() -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=0)

    return make


def evaluate_model(
    model: torch.nn.Module,
    config: Config,
    datasets: Mapping[str, Any],
    collate: Any,
    classes: Mapping[str, list[Any]],
    out: Path,
    *,
    contribution_split: str = "test",
) -> dict[str, Any]:
    """Metrics on every split given, confusion matrices, and modality contribution on one split.

    Fixed-feature encoders extract each batch once for all of it (``remembering_extractions``): the
    contribution passes re-run the same rows without one input at a time.
    """
    with remembering_extractions():
        return _evaluate(model, config, datasets, collate, classes, Path(out), contribution_split)


def _evaluate(
    model: torch.nn.Module, config: Config, datasets: Mapping[str, Any], collate: Any, classes: Mapping[str, list[Any]],
    out: Path, contribution_split: str,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    tasks = config.tasks
    types = {n: t.type for n, t in tasks.items()}
    batch = config.data.eval_batch_size or max(config.data.batch_size, 128)
    result: dict[str, Any] = {"splits": {}, "plots": {}}
    for split, dataset in datasets.items():
        if split == "train" or len(dataset) == 0:
            continue
        make = loader_factory(dataset, collate, batch)
        preds = collect_predictions(model, make(), tasks)
        result["splits"][split] = summarize(types, preds.preds, preds.labels)
        result["splits"][split]["rows"] = len(dataset)
        if split == contribution_split or (contribution_split not in datasets and split == "valid"):
            result["contribution"] = modality_contribution(model, make, tasks, full=preds)
            result["contribution"]["split"] = split
            for name, task in tasks.items():
                if TASKS[task.type].single_label and name in preds.labels and len(classes.get(name, [])) <= 60:
                    matrix = confusion(preds.preds[name], preds.labels[name]).numpy()
                    path = plot_confusion(matrix, classes[name], out / f"confusion_{name}.png", f"{name} ({split})")
                    result["plots"][f"confusion_{name}"] = path.name
                    result.setdefault("confusion", {})[name] = matrix.tolist()
                if TASKS[task.type].text_targets and name in preds.labels:  # a few generated texts for the report
                    from polyfuse.generation.metrics import generation_samples

                    samples = generation_samples(preds.preds[name], preds.labels[name], list(classes.get(name, [])))
                    result.setdefault("samples", {})[name] = samples
    # cross-modal retrieval (runs with contrastive / translation objectives), over whole splits
    from polyfuse.retrieval.embed import retrieval_for_splits

    retrieval = retrieval_for_splits(model, config, datasets, collate, batch)
    if retrieval:
        result["retrieval"] = retrieval
    matching = matching_for_splits(model, datasets, collate, batch)
    if matching:
        result["matching"] = matching
    contrib = result.get("contribution")
    if contrib and contrib.get("without") and tasks:
        first, task = next(iter(tasks.items()))
        metric = TASKS[task.type].main_metric[0]
        bars = {"all": contrib["all"].get(first, {}).get(metric, float("nan"))}
        for name, values in contrib["without"].items():
            bars[f"without {name}"] = values.get(first, {}).get(metric, float("nan"))
        path = plot_bars(bars, out / "modality_contribution.png", f"{first} {metric} with inputs removed", metric)
        result["plots"]["modality_contribution"] = path.name
    return result


def matching_for_splits(model: torch.nn.Module, datasets: Mapping[str, Any], collate: Any, batch: int) -> dict[str, Any]:
    """ITM objectives: held-out accuracy with one random negative per positive, ``{split: {objective: {...}}}``."""
    from polyfuse.objectives.matching import MatchingObjective, matching_accuracy

    names = [n for n, o in getattr(model, "objectives", {}).items() if isinstance(o, MatchingObjective)]
    out: dict[str, Any] = {}
    for split, dataset in datasets.items():
        if split == "train" or len(dataset) == 0 or not names:
            continue
        out[split] = {name: matching_accuracy(model, loader_factory(dataset, collate, batch)(), name) for name in names}
    return out


def write_report(
    out: Path,
    config: Config,
    evaluation: Mapping[str, Any],
    *,
    history: list[dict[str, float]] | None = None,
    summary: Mapping[str, Any] | None = None,
    data_report: Mapping[str, Any] | None = None,
) -> Path:
    """``report.md`` (and ``curves.png``) from an evaluation result."""
    out = Path(out)
    tasks = config.tasks
    lines = [f"# polyfuse report: {config.name}", ""]
    summary = dict(summary or {})
    encoders = summary.get("encoders", {})
    lines += [
        f"- data: `{config.data.dataset or config.data.train}`",
        f"- inputs: {', '.join(f'{k} ({v})' for k, v in encoders.items()) or '-'}",
        f"- fusion: `{config.model.fusion.name}`" if not config.model.ensemble else
        "- ensemble: " + ", ".join(f"`{m.name}` ({m.fusion.name}, weight {m.weight:.2f})" for m in config.model.ensemble),
    ]
    for key in ("parameters", "train_seconds", "epochs_run", "steps_run", "best_epoch", "monitor"):
        if key in summary:
            value = summary[key]
            value = f"{value:,}" if key == "parameters" else (f"{value:.1f}" if isinstance(value, float) else value)
            lines.append(f"- {key.replace('_', ' ')}: {value}")
    lines.append("")
    lines += _choice_lines(config, summary)
    lines += ["## Metrics", "", "| split | task | metric | value |", "|---|---|---|---|"]
    for split, per_task in evaluation.get("splits", {}).items():
        for task, values in per_task.items():
            if not isinstance(values, dict):
                continue
            for metric, value in values.items():
                lines.append(f"| {split} | {task} | {metric} | {value:.4f} |")
    lines.append("")
    if evaluation.get("retrieval"):
        lines += retrieval_lines(evaluation["retrieval"])
    if evaluation.get("matching"):
        lines += ["## Matching (one random negative per positive)", "",
                  "| split | objective | accuracy | on positives | on negatives | pairs |", "|---|---|---|---|---|---|"]
        for split, per_objective in evaluation["matching"].items():
            for name, m in per_objective.items():
                lines.append(f"| {split} | {name} | {m['acc']:.4f} | {m['positives']:.4f} | {m['negatives']:.4f} | {m['pairs']} |")
        lines.append("")
    for task, samples in evaluation.get("samples", {}).items():
        lines += [f"## Generated text: {task}", "", "| target | generated |", "|---|---|"]
        lines += [f"| {row['target'].replace('|', '/')} | {row['generated'].replace('|', '/')} |" for row in samples]
        lines.append("")
    contrib = evaluation.get("contribution")
    if contrib:
        lines += [f"## Modality contribution ({contrib.get('split', 'test')} split)", ""]
        lines.append("The main metric of each task with one input removed (marked missing) for every row.")
        lines.append("")
        header = ["inputs"] + [f"{t} {TASKS[tasks[t].type].main_metric[0]}" for t in tasks]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

        def row(label: str, metrics: Mapping[str, Any]) -> str:
            cells = [label]
            for t in tasks:
                m = TASKS[tasks[t].type].main_metric[0]
                v = metrics.get(t, {}).get(m)
                cells.append("-" if v is None else f"{v:.4f}")
            return "| " + " | ".join(cells) + " |"

        lines.append(row("all", contrib["all"]))
        for name, metrics in contrib.get("without", {}).items():
            lines.append(row(f"without {name}", metrics))
        lines.append("")
        if contrib.get("weights"):
            lines += ["Average fusion weight per input (gates / attention):", ""]
            lines += ["| input | weight |", "|---|---|"]
            lines += [f"| {k} | {v:.3f} |" for k, v in contrib["weights"].items()]
            lines.append("")
        if "modality_contribution" in evaluation.get("plots", {}):
            lines += ["![modality contribution](modality_contribution.png)", ""]
    if history:
        keys = []
        for task_name, task in tasks.items():
            keys.append(f"valid/{task_name}/{TASKS[task.type].main_metric[0]}")
        path = plot_curves(history, out / "curves.png", keys)
        if path:
            lines += ["## Training curves", "", "![curves](curves.png)", ""]
    for name, file in evaluation.get("plots", {}).items():
        if name.startswith("confusion_"):
            lines += [f"## Confusion matrix: {name.removeprefix('confusion_')}", "", f"![{name}]({file})", ""]
    if data_report is not None:
        lines += ["## Data", ""]
        total = data_report.get("total", 0)
        for column, count in (data_report.get("missing") or {}).items():
            lines.append(f"- missing: {count} rows of `{column}` (empty cells: that input is marked missing)")
        lines.append(f"Rows with a problem: {total} (details in `data_report.md`).")
        for key, count in (data_report.get("by_reason") or {}).items():
            lines.append(f"- {key}: {count}")
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _choice_lines(config: Config, summary: Mapping[str, Any]) -> list[str]:
    """What a preset chose and why, and what the trainer fitted (features, thresholds, class weights)."""
    lines: list[str] = []
    choices = config.extra.get("choices") if isinstance(config.extra, dict) else None
    if choices:
        lines += ["## Choices", "", "| what | choice | why |", "|---|---|---|"]
        for c in choices:
            cells = [str(c.get(k, "")).replace("|", "/").replace("\n", " ") for k in ("what", "choice", "why")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if summary.get("features"):
        lines += ["## Fixed features (computed once per row)", "", "| input | encoder | width | computed rows | from cache | seconds |", "|---|---|---|---|---|---|"]
        for name, f in summary["features"].items():
            lines.append(f"| {name} | {f['encoder']} | {f['feature_dim']} | {f['computed_rows']} | {f['cached_rows']} | {f['seconds']} |")
        lines.append("")
    convex = summary.get("convex")
    if convex:
        grid = "; ".join(f"{k}: {v:.4f}" for k, v in convex["scores"].items())
        lines += [f"Convex fit (`train.solver: convex`): scikit-learn {convex['estimator']} on {convex['rows']} training rows x "
                  f"{convex['features']} features, {convex['chosen']} chosen by {convex['metric']} on "
                  f"{convex['scored_on']} ({grid}).", ""]
    for task, t in (summary.get("thresholds") or {}).items():
        lines += [f"Decision threshold of `{task}`: {t['threshold']} (validation {t['metric']} {t['valid_at_threshold']:.4f}, "
                  f"{t['valid_at_0.5']:.4f} at 0.5), folded into the head's bias.", ""]
    for task, w in (summary.get("class_weights") or {}).items():
        lines += [f"Class weights of `{task}` (balanced): {', '.join(f'{v:.2f}' for v in w)}.", ""]
    return lines


def retrieval_lines(retrieval: Mapping[str, Any]) -> list[str]:
    """The ``## Retrieval`` section: recall@K and ranks per split, objective and direction."""
    lines = ["## Retrieval", ""]
    lines.append("Every query ranks all rows of the split by cosine similarity in the objective's space; "
                 "R@K = fraction of queries whose match is in the top K (chance R@1 = matches / rows).")
    lines.append("")
    ks: list[str] = []
    for per_objective in retrieval.values():
        for per_direction in per_objective.values():
            for values in per_direction.values():
                ks += [k for k in values if k.startswith("R@") and k not in ks]
    header = ["split", "objective", "direction", *ks, "median rank", "chance R@1", "queries"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for split, per_objective in retrieval.items():
        for objective, per_direction in per_objective.items():
            for direction, values in per_direction.items():
                cells = [split, objective, direction.replace("->", " → ")]
                cells += [f"{values.get(k, float('nan')):.3f}" for k in ks]
                cells += [f"{values.get('median_rank', float('nan')):.1f}", f"{values.get('chance_R@1', float('nan')):.4f}",
                          str(values.get("queries", "-"))]
                lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def load_history(path: Path) -> list[dict[str, float]]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []


__all__ = ["evaluate_model", "write_report", "load_history", "np"]
