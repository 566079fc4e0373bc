"""Training a TablePlan: one run, k-fold cross-validation with a refit, or a selection among candidates.

- One run: the plan's config through ``run_training``.
- Cross-validation (tiny tables): each candidate is trained on k-1 folds and scored on the
  held-out fold; the best candidate is refit on every training row for the median number of
  epochs at which the folds peaked (no early stopping: there is nothing left to stop on).
- Selection (``best``): the candidates of ``polyfuse benchmark fusion`` (each input alone, then
  the preset's fusions), each trained into ``OUT/candidates/<name>`` under the time limit, picked
  by the validation metric; the winner's model directory becomes ``OUT``. Finished candidates are
  reused, so an interrupted selection continues where it stopped.

Every path writes the preset's choices and, when there were several runs, the leaderboard into
``OUT/report.md`` and ``OUT/metrics.json`` (``selection``).
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from polyfuse.config import Config
from polyfuse.errors import PolyfuseError
from polyfuse.presets.table import TablePlan
from polyfuse.train.metrics import monitor_mode
from polyfuse.train.runner import RunResult, run_training

CANDIDATES = "candidates"
CV = "cv"
MIN_CANDIDATE_SECONDS = 20.0


@dataclass
class Candidate:
    key: str
    overrides: list[str]
    scores: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # optimizer steps each fold ran
    seconds: float = 0.0
    run: Path | None = None
    skipped: str | None = None

    @property
    def score(self) -> float | None:
        return statistics.fmean(self.scores) if self.scores else None


def _candidates(plan: TablePlan) -> list[Candidate]:
    """The default model first, then (``best``) each input alone and the preset's fusions."""
    from polyfuse.benchmark.fusion import plan_variants

    default = plan.config.model.fusion.name
    out = [Candidate(default, [])]
    if not plan.selection:
        return out
    fusions = [f for f in plan.selection.get("fusions", []) if f != default]
    inputs = list(plan.config.data.inputs)
    for variant in plan_variants(inputs, fusions, unimodal=bool(plan.selection.get("unimodal", True))):
        overrides = [o for o in variant.overrides if not o.startswith("data.augment.")]
        out.append(Candidate(variant.key, overrides))
    return out


def _write_table(frame: pd.DataFrame, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        frame.to_parquet(path.with_suffix(".parquet"), index=False)
        return str(path.with_suffix(".parquet"))
    except Exception:  # noqa: BLE001 - mixed object columns pyarrow cannot type: CSV keeps them as text
        frame.to_csv(path.with_suffix(".csv"), index=False)
        return str(path.with_suffix(".csv"))


def _score(metrics: dict[str, Any], monitor: str) -> float | None:
    _, task, metric = monitor.split("/", 2)
    value = (metrics.get("valid") or {}).get(task, {}).get(metric)
    return None if value is None else float(value)


def _complete(run: Path) -> dict[str, Any] | None:
    if (run / "COMPLETE").is_file() and (run / "metrics.json").is_file():
        return json.loads((run / "metrics.json").read_text())
    return None


def fit_table(
    plan: TablePlan,
    out: str | Path,
    *,
    frame: pd.DataFrame | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool | None = None,
    say: Callable[[str], None] | None = None,
) -> RunResult:
    """Train what ``plan`` says into ``out``; ``frame`` is the table when it came as a DataFrame."""
    out = Path(out)
    say = say or (lambda message: None)
    started = time.perf_counter()
    config = plan.config
    if frame is not None:  # a DataFrame: written once, file cells resolve against the working directory
        if (out / "checkpoints").exists() and not (overwrite or resume):
            raise PolyfuseError(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it")
        config = config.with_overrides([f"data.train={_write_table(frame, out / 'data' / 'table')}"])
    candidates = _candidates(plan)
    if not plan.cv_folds and len(candidates) == 1:
        result = run_training(config, out, resume=resume, overwrite=overwrite, progress=progress)
        _finish(out, plan, [], None, time.perf_counter() - started)
        return RunResult(out, json.loads((out / "metrics.json").read_text()), result.config)
    if out.exists() and overwrite:
        shutil.rmtree(out)
    elif (out / "COMPLETE").exists() and not resume:
        raise PolyfuseError(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it")
    deadline = started + plan.time_limit if plan.time_limit else None
    if plan.cv_folds:
        return _cross_validate(plan, config, candidates, out, deadline, progress, say, started)
    return _select(plan, config, candidates, out, deadline, progress, say, started)


def _share(deadline: float | None, left: int) -> float | None:
    if deadline is None:
        return None
    return max(MIN_CANDIDATE_SECONDS, (deadline - time.perf_counter()) / max(1, left))


def _select(
    plan: TablePlan, config: Config, candidates: list[Candidate], out: Path, deadline: float | None,
    progress: bool | None, say: Callable[[str], None], started: float,
) -> RunResult:
    monitor = config.train.monitor or ""
    mode = monitor_mode(monitor)
    for i, cand in enumerate(candidates):
        run = out / CANDIDATES / cand.key.replace(" ", "_").replace("+", "_")
        cand.run = run
        metrics = _complete(run)
        if metrics is None:
            if deadline is not None and i > 0 and time.perf_counter() > deadline - MIN_CANDIDATE_SECONDS:
                cand.skipped = "time limit reached"
                continue
            share = _share(deadline, len(candidates) - i)
            extra = cand.overrides + ([f"train.max_seconds={share:.0f}"] if share else [])
            t0 = time.perf_counter()
            metrics = run_training(config.with_overrides(extra), run, overwrite=True, progress=progress).metrics
            cand.seconds = time.perf_counter() - t0
        else:
            cand.seconds = float(metrics.get("train_seconds", 0.0))
        score = _score(metrics, monitor)
        if score is not None:
            cand.scores.append(score)
        say(f"candidate {cand.key}: {monitor.split('/')[-1]} {score if score is not None else float('nan'):.4f}")
    ranked = _ranked(candidates, mode)
    if not ranked:
        raise PolyfuseError("no candidate finished with a validation score; give a larger --time-limit")
    winner = ranked[0]
    assert winner.run is not None
    _adopt(winner.run, out)
    _finish(out, plan, candidates, winner, time.perf_counter() - started)
    return RunResult(out, json.loads((out / "metrics.json").read_text()), Config.from_yaml(out / "config.yaml"))


def _ranked(candidates: list[Candidate], mode: str) -> list[Candidate]:
    scored = [c for c in candidates if c.score is not None]
    return sorted(scored, key=lambda c: -c.score if mode == "max" else c.score)  # type: ignore[operator]


def _folds(frame: pd.DataFrame, config: Config, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    task = next(iter(config.tasks.values()))
    labels = frame[task.column].astype(str).to_numpy()
    group = config.data.split.group
    seed = config.data.split.seed
    classification = task.type == "classification"
    smallest = pd.Series(labels).value_counts().min()
    k = max(2, min(k, int(smallest) if classification else k, len(frame)))
    index = np.arange(len(frame))
    if group:
        splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed) if classification else GroupKFold(k)
        return list(splitter.split(index, labels, frame[group].astype(str).to_numpy()))
    splitter = StratifiedKFold(k, shuffle=True, random_state=seed) if classification else KFold(k, shuffle=True, random_state=seed)
    return list(splitter.split(index, labels))


def _cross_validate(
    plan: TablePlan, config: Config, candidates: list[Candidate], out: Path, deadline: float | None,
    progress: bool | None, say: Callable[[str], None], started: float,
) -> RunResult:
    from polyfuse.data.manifest import read_manifest
    from polyfuse.data.splits import split_frame

    monitor = config.train.monitor or ""
    mode = monitor_mode(monitor)
    data_dir = out / CV / "data"
    assert config.data.train is not None
    frame = read_manifest(config.data.train)
    test_file = config.data.test
    if not test_file and config.data.split.test > 0:  # the test rows leave before any fold is cut
        task = next(iter(config.tasks.values()))
        parts = split_frame(frame, valid=0.0, test=config.data.split.test, seed=config.data.split.seed,
                            stratify=task.column if task.type == "classification" else None, group=config.data.split.group)
        test_file = _write_table(frame.iloc[parts["test"]], data_dir / "test")
        frame = frame.iloc[parts["train"]].reset_index(drop=True)
    pool_file = _write_table(frame, data_dir / "train")
    folds = _folds(frame, config, plan.cv_folds)
    if len(folds) != plan.cv_folds:
        say(f"{len(folds)} folds instead of {plan.cv_folds}: the rarest class has only {len(folds)} training rows")
        plan.cv_folds = len(folds)
    fold_files = []
    for f, (tr, va) in enumerate(folds):
        fold_files.append((_write_table(frame.iloc[tr], data_dir / f"fold{f}_train"), _write_table(frame.iloc[va], data_dir / f"fold{f}_valid")))
    base = ["data.split.valid=0.0", "data.split.test=0.0", "data.test=null"]
    for i, cand in enumerate(candidates):
        for f, (train_file, valid_file) in enumerate(fold_files):
            run = out / CV / cand.key.replace(" ", "_").replace("+", "_") / f"fold{f}"
            metrics = _complete(run)
            if metrics is None:
                if deadline is not None and (i > 0 or f > 0) and time.perf_counter() > deadline - MIN_CANDIDATE_SECONDS:
                    cand.skipped = "time limit reached"
                    break
                t0 = time.perf_counter()
                overrides = cand.overrides + base + [f"data.train={train_file}", f"data.valid={valid_file}"]
                metrics = run_training(config.with_overrides(overrides), run, overwrite=True, progress=progress).metrics
                cand.seconds += time.perf_counter() - t0
            score = _score(metrics, monitor)
            if score is not None:
                cand.scores.append(score)
            if metrics.get("steps_run"):
                cand.steps.append(int(metrics["steps_run"]))
        if cand.skipped and len(cand.scores) < len(fold_files):
            cand.scores = []  # a partly cross-validated candidate is not compared with complete ones
        say(f"candidate {cand.key}: {len(cand.scores)}-fold mean {monitor.split('/')[-1]} "
            f"{cand.score if cand.score is not None else float('nan'):.4f}")
    ranked = _ranked(candidates, mode)
    if not ranked:
        raise PolyfuseError("no candidate finished its cross-validation; give a larger --time-limit")
    winner = ranked[0]
    # the refit runs the schedule the folds ran (same number of optimizer steps, same decay): on a
    # tiny table the epoch of the best fold score is noise, the end of a regularized schedule is not
    steps_per_epoch = max(1, -(-len(frame) // config.data.batch_size))
    steps = int(statistics.median(winner.steps)) if winner.steps else config.train.max_steps
    epochs = max(1, -(-max(1, steps) // steps_per_epoch))
    refit = winner.overrides + [
        f"data.train={pool_file}", "data.valid=null", f"data.test={test_file or 'null'}",
        "data.split.valid=0.0", "data.split.test=0.0", f"train.epochs={epochs}",
        f"train.max_steps={epochs * steps_per_epoch}", "train.min_steps=0", "train.early_stopping.patience=null",
        "train.monitor=null", f"train.eval_every_n_epochs={max(1, epochs)}",
    ] + [f"tasks.{t}.threshold=none" for t in config.tasks]
    say(f"refit {winner.key} on all {len(frame)} training rows for {epochs} epochs (the folds' median length)")
    result = run_training(config.with_overrides(refit), out / CV / "refit", overwrite=True, progress=progress)
    _adopt(out / CV / "refit", out)
    _finish(out, plan, candidates, winner, time.perf_counter() - started, refit_epochs=epochs)
    return RunResult(out, json.loads((out / "metrics.json").read_text()), result.config)


def _adopt(run: Path, out: Path) -> None:
    """Copy a finished run's model directory into ``out`` (COMPLETE last, so a torn copy never loads)."""
    (out / "COMPLETE").unlink(missing_ok=True)
    items = sorted(run.iterdir(), key=lambda p: p.name == "COMPLETE")
    for item in items:
        target = out / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)


def _finish(
    out: Path, plan: TablePlan, candidates: list[Candidate], winner: Candidate | None, seconds: float,
    refit_epochs: int | None = None,
) -> None:
    """Preset choices (already in the report via the config) plus the leaderboard and totals."""
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics["preset"] = plan.preset
    metrics["total_seconds"] = round(seconds, 2)
    lines = []
    if candidates:
        how = f"{plan.cv_folds}-fold cross-validation" if plan.cv_folds else "the validation split"
        lines += ["", "## Selection", "", f"Candidates scored on {how}; the best is the model of this directory."
                  + (f" Refit on every training row for {refit_epochs} epochs." if refit_epochs else ""), "",
                  "| rank | candidate | valid score | train s | note |", "|---|---|---|---|---|"]
        mode = monitor_mode(plan.config.train.monitor or "")
        ranked = _ranked(candidates, mode)
        rest = [c for c in candidates if c not in ranked]
        board = []
        for rank, cand in enumerate(ranked + rest, start=1):
            score = "-" if cand.score is None else (
                f"{cand.score:.4f}" + (f" ± {statistics.pstdev(cand.scores):.4f}" if len(cand.scores) > 1 else ""))
            note = "chosen" if cand is winner else (cand.skipped or "")
            lines.append(f"| {rank if cand.score is not None else '-'} | {cand.key} | {score} | {cand.seconds:.1f} | {note} |")
            board.append({"candidate": cand.key, "score": cand.score, "scores": cand.scores, "seconds": round(cand.seconds, 2),
                          "skipped": cand.skipped, "chosen": cand is winner})
        metrics["selection"] = {"monitor": plan.config.train.monitor, "folds": plan.cv_folds, "candidates": board,
                                "chosen": winner.key if winner else None, "refit_epochs": refit_epochs}
        (out / "leaderboard.md").write_text("\n".join(lines[2:]) + "\n", encoding="utf-8")
    lines += ["", f"Total time: {seconds:.1f} s (preset `{plan.preset}`).", ""]
    report = out / "report.md"
    if report.is_file():
        report.write_text(report.read_text(encoding="utf-8").rstrip("\n") + "\n" + "\n".join(lines), encoding="utf-8")
    if metrics:
        from polyfuse.checkpoint import write_metrics

        write_metrics(out, metrics)
