"""A preset applied to a user's table: inputs, encoders, schedule, validation and class weights, each with its reason.

``plan_table(table, labels, preset=...)`` reads the table once, infers what each column holds
(``polyfuse.data.schema``), and returns a ``TablePlan``: the Config to train, the list of
choices (what, choice, why) that goes into the run's ``report.md``, and how to validate
(one stratified split, or k-fold cross-validation for tiny tables) and what to select (``best``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from polyfuse.config import Config, ConfigError
from polyfuse.data.schema import Schema, infer_schema, infer_task_type, safe_name
from polyfuse.errors import DataError
from polyfuse.presets import DEFAULT_PRESET, load_preset
from polyfuse.tasks import TASKS

#: Short suffixes naming the second and later inputs read from one column.
ENCODER_SUFFIX = {
    "text_ngrams": "ngrams", "pretrained_text_embedding": "minilm", "hf_text": "minilm",
    "image_pixels": "pixels", "pretrained_image_embedding": "pretrained", "cnn": "cnn", "lenet": "lenet",
    "sequence_rocket": "rocket", "sequence_summary": "summary",
}
#: ``--metric`` names -> the metric keys polyfuse logs.
METRIC_ALIASES = {"macro_f1": "f1", "f1": "f1", "acc": "acc", "accuracy": "acc", "auroc": "auroc",
                  "rmse": "rmse", "mae": "mae"}
DEFAULT_TEST_FRACTION = 0.1


@dataclass
class Choice:
    what: str
    choice: str
    why: str

    def to_dict(self) -> dict[str, str]:
        return {"what": self.what, "choice": self.choice, "why": self.why}


@dataclass
class TablePlan:
    """What a preset decided for one table."""

    config: Config
    preset: str
    choices: list[Choice] = field(default_factory=list)
    cv_folds: int = 0  # > 0: k-fold cross-validation on the training rows, then a refit on all of them
    selection: dict[str, Any] | None = None  # best: {"fusions": [...], "unimodal": bool}
    time_limit: float | None = None
    train_rows: int = 0  # rows the model trains on (after the test and validation splits)


def read_table(table: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str | None, Path]:
    """(rows, manifest path or None, folder that relative file paths resolve against)."""
    from polyfuse.data.manifest import read_manifest

    if isinstance(table, pd.DataFrame):
        return table.reset_index(drop=True), None, Path.cwd()
    path = Path(table)
    return read_manifest(path), str(path), path.parent


# --------------------------------------------------------------------------- column facts


def _sizes(info: Any) -> list[tuple[int, int]]:
    """(width, height) of the sampled images of a column, from the schema's file check."""
    out = []
    for text, count in ((info.files or {}).get("formats") or {}).items():
        match = re.match(r"(\d+)x(\d+)", text)
        if match:
            out += [(int(match.group(1)), int(match.group(2)))] * int(count)
        shape = re.match(r"array \((\d+), (\d+)", text)
        if shape:
            out += [(int(shape.group(2)), int(shape.group(1)))] * int(count)
    return out


def _facts(kind: str, columns: Sequence[str], schema: Schema, rows: int) -> dict[str, Any]:
    facts: dict[str, Any] = {"rows": rows}
    if kind == "image":
        sizes = [s for c in columns for s in _sizes(schema.columns[c])]
        if sizes:
            facts["side"] = sorted(min(w, h) for w, h in sizes)[len(sizes) // 2]  # median shorter side
            modes = [f for c in columns for f in ((schema.columns[c].files or {}).get("formats") or {})]
            facts["gray"] = all(m.endswith(" L") or m.endswith(" LA") or m.endswith(" 1") for m in modes)
    return facts


def _holds(when: Mapping[str, Any], facts: Mapping[str, Any], kind: str) -> tuple[bool, str]:
    """Whether a rule's ``when`` holds; the reason in words (empty when there is no condition)."""
    parts = []
    for key, bound in (when or {}).items():
        rows = facts["rows"]
        side = facts.get("side")
        if key in ("max_text_rows", "max_image_rows", "max_rows"):
            ok, text = rows <= bound, f"{rows} rows {'<=' if rows <= bound else '>'} {bound}"
        elif key == "min_rows":
            ok, text = rows >= bound, f"{rows} rows {'>=' if rows >= bound else '<'} {bound}"
        elif key == "min_side":
            ok, text = side is not None and side >= bound, f"images {side}px {'>=' if side and side >= bound else '<'} {bound}px"
        elif key == "max_side":
            ok, text = side is not None and side <= bound, f"images {side}px {'<=' if side and side <= bound else '>'} {bound}px"
        else:
            raise ConfigError(f"preset encoders.{kind}: unknown condition {key!r}; allowed: max_rows, min_rows, max_text_rows, max_image_rows, min_side, max_side")
        if not ok:
            return False, text
        parts.append(text)
    return True, ", ".join(parts)


# --------------------------------------------------------------------------- the plan


#: ``selection.linear``: which inputs become convex candidates (``true`` is ``ngrams``)
LINEAR_MODES = {
    "ngrams": "each n-gram text input alone, and all of them together",
    "inputs": "each fixed-feature input alone (n-grams, cached features, tabular through tabular_linear), and all together",
    "together": "all fixed-feature inputs as one model",
}


#: ``selection.ensemble_fit``: what the greedy ensemble weights are fitted to on held-out predictions
ENSEMBLE_FITS = {
    "log_loss": "held-out log-loss for classification (a proper score: continuous where accuracy moves a row at a "
                "time), the selection metric otherwise",
    "metric": "the selection metric",
}


def ensemble_fit(value: Any) -> str:
    """``selection.ensemble_fit`` as one of ENSEMBLE_FITS (absent -> ``metric``); ConfigError for anything else."""
    fit = "metric" if value is None else value
    if fit not in ENSEMBLE_FITS:
        raise ConfigError(f"selection.ensemble_fit: {value!r} is not one of {', '.join(ENSEMBLE_FITS)}")
    return str(fit)


def linear_mode(value: Any) -> str:
    """``selection.linear`` as one of LINEAR_MODES (``true`` -> ``ngrams``); ConfigError for anything else."""
    mode = "ngrams" if value is True else value
    if mode not in LINEAR_MODES:
        raise ConfigError(f"selection.linear: {value!r} is not one of false, true, {', '.join(LINEAR_MODES)}")
    return str(mode)


def plan_table(
    table: str | Path | pd.DataFrame,
    labels: Sequence[str],
    *,
    preset: str = DEFAULT_PRESET,
    valid: str | None = None,
    test: str | None = None,
    task_type: str | None = None,
    metric: str | None = None,
    group: str | None = None,
    time_limit: float | None = None,
) -> TablePlan:
    """Apply ``preset`` to ``table`` (a manifest path or a DataFrame whose file cells are paths)."""
    spec = load_preset(preset)
    frame, source, root = read_table(table)
    labels = list(labels)
    missing = [c for c in labels + ([group] if group else []) if c not in frame.columns]
    if missing:
        raise DataError(f"column {missing[0]!r} not in the table; columns present: {', '.join(map(str, frame.columns))}", file=source)
    choices: list[Choice] = [Choice("preset", spec["name"], str(spec.get("description", "")).strip())]
    excluded = labels + ([group] if group else [])
    schema = infer_schema(frame, root, labels=[c for c in excluded], allow_outside_root=source is None)
    for name, info in schema.columns.items():
        if info.role in ("id", "ignore") and name not in excluded:
            choices.append(Choice(f"column {name}", "excluded", f"{info.reason}; to use it, list it in data.inputs"))

    # tasks
    tasks: dict[str, Any] = {}
    class_counts: dict[str, pd.Series] = {}
    names = {}
    for label in labels:
        kind = task_type or infer_task_type(frame[label])
        name = safe_name(label, "label")
        names[label] = name
        tasks[name] = {"column": label, "type": kind}
        if TASKS[kind].single_label:
            class_counts[name] = frame[label].dropna().astype(str).value_counts()
    test_fraction = 0.0 if test else DEFAULT_TEST_FRACTION
    pool = len(frame) if valid else int(round(len(frame) * (1 - test_fraction)))

    # validation: a stratified split big enough to hold a few rows per class, or cross-validation
    vspec = spec.get("validation", {})
    cv_folds = 0
    valid_fraction = 0.0
    if valid:
        choices.append(Choice("validation", f"the given file {valid}", "--valid was given"))
    else:
        n_classes = max((len(c) for c in class_counts.values()), default=0)
        wanted = float(vspec.get("fraction", 0.15))
        if n_classes:
            wanted = max(wanted, vspec.get("min_rows_per_class", 4) * n_classes / max(pool, 1))
        valid_fraction = min(wanted, float(vspec.get("max_fraction", 0.3)))
        if pool < int(vspec.get("cv_below_rows", 0)):
            cv_folds = int(vspec.get("folds", 5))
            choices.append(Choice("validation", f"{cv_folds}-fold cross-validation, then a refit on all {pool} training rows",
                                  f"{pool} training rows < {vspec.get('cv_below_rows')}: one held-out split would be too small to trust"))
        else:
            why = f"{valid_fraction:.0%} of {pool} rows" + (f", about {vspec.get('min_rows_per_class', 4)}+ rows per class for {n_classes} classes" if n_classes else "")
            choices.append(Choice("validation", f"stratified split, {valid_fraction:.2f}" + (f", grouped by {group}" if group else ""), why))
    train_rows = pool if cv_folds else int(round(pool * (1 - valid_fraction)))
    if cv_folds:
        train_rows = int(round(pool * (cv_folds - 1) / cv_folds))

    # inputs and their encoders
    inputs: dict[str, dict[str, Any]] = {}
    encoders: dict[str, dict[str, Any]] = {}
    for base_name, entry in schema.inputs().items():
        kind = entry["kind"]
        columns = [entry["column"]] if "column" in entry else [*entry.get("numeric", []), *entry.get("categorical", [])]
        facts = _facts(kind, columns, schema, len(frame))
        picked = []
        for rule in spec.get("encoders", {}).get(kind, []):
            ok, reason = _holds(rule.get("when", {}), facts, kind)
            if ok:
                picked.append((rule, reason))
            elif rule.get("when"):
                choices.append(Choice(f"input {base_name}", f"not {rule['encoder']}", f"condition not met: {reason}"))
        if not picked:
            inputs[base_name] = dict(entry)
            choices.append(Choice(f"input {base_name}", "the default encoder", f"the preset has no {kind} encoder rule that applies"))
            continue
        for i, (rule, reason) in enumerate(picked):
            name = base_name if len(picked) == 1 else f"{base_name}_{ENCODER_SUFFIX.get(rule['encoder'], rule['encoder'])}"
            options = {**entry, **dict(rule.get("input") or {})}
            if kind == "image" and "channels" not in (rule.get("input") or {}) and facts.get("gray"):
                options["channels"] = 1
            inputs[name] = options
            encoders[name] = {"name": rule["encoder"], **dict(rule.get("params") or {})}
            what = f"input {name} ({', '.join(columns) if len(columns) <= 3 else f'{len(columns)} columns'})"
            choices.append(Choice(what, rule["encoder"], rule.get("why", "") + (f" ({reason})" if reason else "")))
    if not inputs:
        raise DataError("no input columns found (every column is a label, an id, or ignored); set data.inputs", file=source)

    # schedule in optimizer steps
    sched = spec.get("schedule", {})
    bs = sched.get("batch_size", {})
    batch = int(min(bs.get("max", 64), max(bs.get("min", 16), train_rows // max(1, bs.get("batches_per_epoch", 8)))))
    steps_per_epoch = max(1, math.ceil(train_rows / batch))
    min_steps = int(sched.get("min_steps", 300))
    total = int(min(sched.get("max_steps", 3000), max(2 * min_steps, sched.get("epochs_for_steps", 12) * steps_per_epoch)))
    epochs = max(1, math.ceil(total / steps_per_epoch))
    every = max(1, round(epochs / max(1, sched.get("evaluations", 40))))
    patience = int(sched.get("patience", 8))
    choices.append(Choice(
        "schedule", f"{total} optimizer steps at most ({epochs} epochs of {steps_per_epoch} steps, batch {batch}); at least {min(min_steps, total)}",
        f"{train_rows} training rows; validation every {every} epoch(s), early stopping after {patience} evaluations without gain, never before {min(min_steps, total)} steps",
    ))

    # imbalance and the metric
    ispec = spec.get("imbalance", {})
    first = names[labels[0]]
    for label, counts in class_counts.items():
        ratio = float(counts.max() / max(1, counts.min())) if len(counts) else 1.0
        if ratio > float(ispec.get("class_weights_above", 1.5)):
            tasks[label]["class_weights"] = "balanced"
            choices.append(Choice(f"task {label}", "class-weighted loss (balanced)", f"largest / smallest class = {ratio:.1f}"))
        if len(counts) == 2 and ispec.get("tune_threshold", True):
            tasks[label]["threshold"] = "tune"
            choices.append(Choice(f"task {label}", "decision threshold tuned on validation", "binary label"))
    kind = tasks[first]["type"]
    allowed = TASKS[kind].metric_names
    if metric is not None:
        key = METRIC_ALIASES.get(metric)
        if key not in allowed:
            raise ConfigError(f"--metric: {metric!r} is not a metric of a {kind} task; allowed: {', '.join(k for k, v in METRIC_ALIASES.items() if v in allowed)}")
    else:
        key = TASKS[kind].main_metric[0]
    monitor = f"valid/{first}/{key}"
    choices.append(Choice("metric", key, "--metric" if metric else f"the default for {kind}"))
    fusion = spec.get("fusion", "concat")
    fusion_name = fusion["name"] if isinstance(fusion, dict) else fusion
    if len(inputs) > 1:
        choices.append(Choice("fusion", fusion_name + (f" ({', '.join(f'{k}={v}' for k, v in fusion.items() if k != 'name')})" if isinstance(fusion, dict) else ""),
                              "the preset's fusion: one head per input, predictions averaged with learned weights"
                              if fusion_name == "late" else "the preset's fusion"))

    head = dict(spec.get("head") or {})
    for label in tasks:
        if not TASKS[tasks[label]["type"]].text_targets:  # the preset's head is an MLP head's options
            tasks[label]["head"] = head
    raw: dict[str, Any] = {
        "name": Path(source).stem if source else "table",
        "data": {
            "train": source, "valid": valid, "test": test, "root": str(root),
            # a DataFrame comes from the user's own code: its file paths may point anywhere
            "allow_outside_root": source is None,
            "inputs": inputs,
            "split": {"valid": 0.0 if (valid or cv_folds) else round(valid_fraction, 4), "test": test_fraction, "group": group},
            "batch_size": batch,
        },
        "model": {"encoders": encoders, "fusion": fusion, "dim": int(spec.get("dim", 128))},
        "tasks": tasks,
        "train": {
            "epochs": epochs, "max_steps": total, "min_steps": min(min_steps, total), "eval_every_n_epochs": every,
            "early_stopping": {"patience": patience}, "lr": float(sched.get("lr", 1e-3)),
            "weight_decay": float(sched.get("weight_decay", 0.01)), "warmup": float(sched.get("warmup", 0.05)),
            "monitor": monitor, "max_seconds": time_limit,
        },
        "extra": {"preset": spec["name"], "choices": [c.to_dict() for c in choices]},
    }
    if time_limit:
        choices.append(Choice("time limit", f"{time_limit:g} s", "--time-limit"))
    selection = spec.get("selection")
    if selection and selection.get("linear"):
        linear_mode(selection["linear"])  # a wrong value stops here, before any data is read
    if selection:
        ensemble_fit(selection.get("ensemble_fit"))
    if selection and selection.get("max_rows") and len(frame) > int(selection["max_rows"]):
        if selection.get("linear") and selection.get("linear_above_max_rows"):
            # a selection among many candidates costs too much here; one convex fit over every
            # fixed-feature input costs one pass of L-BFGS per setting (medium's default: clothing and a
            # held-out 23k-row table gained 2.8 / 4.6 points; benchmarks/results/bench_tables_linear_above.md)
            choices.append(Choice("selection", "the fused model or all fixed-feature inputs as one logistic / ridge "
                                  "regression (convex fit), the better on validation (or their weighted average)",
                                  f"{len(frame)} rows > {selection['max_rows']}: no wider selection"))
            selection = {"fusions": [], "unimodal": False, "linear": "together", "ensemble": selection.get("ensemble"),
                         "ensemble_fit": selection.get("ensemble_fit")}
        else:
            choices.append(Choice("selection", "none: one model", f"{len(frame)} rows > {selection['max_rows']}"))
            selection = None
    elif selection and len(inputs) == 1 and not selection.get("heads") and int(selection.get("seeds") or 1) > 1 \
            and int(selection.get("ensemble") or 0) > 1:
        choices.append(Choice("ensemble", f"the model from {int(selection['seeds'])} seeds, weighted",
                              "one input: nothing to select; averaging seeds lowers the variance of a small table's model"))
    elif selection and (len(inputs) > 1 or selection.get("heads")):
        how = f"by {'cross-validation' if cv_folds else 'validation'}"
        why = "the preset's selection" + (f" under --time-limit {time_limit:g} s" if time_limit else "")
        if len(inputs) > 1:
            fusions = ", ".join(selection.get("fusions") or []) or "no other fusion"
            heads = "".join(f", the fused model with a {int(h)}-unit hidden layer in its head" for h in selection.get("heads") or [])
            linear = (f"{LINEAR_MODES[linear_mode(selection['linear'])]} as a logistic / ridge regression (convex fit), "
                      if selection.get("linear") else "")
            among = "the fused model, " + ("each input alone, " if selection.get("unimodal", True) else "") + linear + fusions + heads
        else:  # one input: nothing to fuse, only the head variants to compare
            among = "the model and " + ", ".join(f"the model with a {int(h)}-unit hidden layer in its head" for h in selection["heads"])
            why += " (one input: only its head variants)"
        choices.append(Choice("selection", f"{how} among {among}", why))
        if int(selection.get("ensemble") or 0) > 1:
            fit = ENSEMBLE_FITS[ensemble_fit(selection.get("ensemble_fit"))]
            choices.append(Choice("ensemble", f"up to the top {int(selection['ensemble'])} candidates, weighted",
                                  f"greedy ensemble selection on held-out predictions, weights fitted to {fit}; "
                                  "kept only when a single candidate is not as good there"))
    config = Config.from_dict(raw)
    config.extra["choices"] = [c.to_dict() for c in choices]
    return TablePlan(config, spec["name"], choices, cv_folds, selection, time_limit, train_rows)
