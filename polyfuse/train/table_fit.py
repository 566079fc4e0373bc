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
from polyfuse.presets.table import TablePlan, ensemble_fit, linear_mode
from polyfuse.checkpoint import LoadedCheckpoint, load_model_dir
from polyfuse.encoders.extraction_memo import remembering_extractions
from polyfuse.train.ensemble import (
    MemberPredictions, close_to_best, greedy_weights, member_predictions, metric_function, save_ensemble,
)
from polyfuse.train.metrics import monitor_mode
from polyfuse.train.ranking import by_metric, log_loss
from polyfuse.train.runner import RunResult, run_training
from polyfuse.tasks import TASKS

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
    refit_rows: int | None = None  # the model kept was fitted again on this many rows (training + validation)

    @property
    def score(self) -> float | None:
        return statistics.fmean(self.scores) if self.scores else None


def _candidates(plan: TablePlan) -> list[Candidate]:
    """The default model first, then each input alone, the preset's fusions and its head variants."""
    from polyfuse.presets.variants import plan_variants

    default = plan.config.model.fusion.name
    out = [Candidate(default, [])]
    if not plan.selection:
        return out
    fusions = [f for f in plan.selection.get("fusions", []) if f != default]
    inputs = list(plan.config.data.inputs)
    for variant in plan_variants(inputs, fusions, unimodal=bool(plan.selection.get("unimodal", True))):
        overrides = [o for o in variant.overrides if not o.startswith("data.augment.")]
        out.append(Candidate(variant.key, overrides))
    if plan.selection.get("linear"):
        out += _linear_candidates(plan.config, plan.selection["linear"])
    for hidden in plan.selection.get("heads") or []:
        # the default fusion with a hidden layer in every task head: non-linear in the fused features
        out.append(Candidate(f"{default} head{int(hidden)}", [f"tasks.{t}.head.hidden={int(hidden)}" for t in plan.config.tasks]))
    seeds = int(plan.selection.get("seeds") or 1)
    if len(out) == 1 and seeds > 1 and _ensemble_size(plan) > 1:
        # one input, nothing else to select: the same model from other seeds, for the ensemble to average
        base = plan.config.train.seed
        out += [Candidate(f"{default} seed {base + k}", [f"train.seed={base + k}"]) for k in range(1, seeds)]
    return out


def _linear_candidates(config: Config, mode: Any = "ngrams") -> list[Candidate]:
    """Logistic / ridge regressions fitted to convergence (``train.solver: convex``) on fixed features,
    per ``mode`` (LINEAR_MODES): n-gram inputs (each and together), every fixed-feature input (each
    and together; tabular inputs through ``tabular_linear``), or all fixed-feature inputs as one.

    On a few hundred rows a convex fit on the n-gram TF-IDF beats gradient steps on the same map."""
    mode = linear_mode(mode)
    if len(config.tasks) != 1 or config.objectives:
        return []
    task_name, task = next(iter(config.tasks.items()))
    if not (TASKS[task.type].single_label or TASKS[task.type].standardized):
        return []
    swaps: dict[str, list[str]] = {}  # input -> the overrides that make it linear in fixed features
    for name, spec in config.data.inputs.items():
        encoder = config.model.encoders.get(name)
        if mode == "ngrams":
            if encoder is not None and encoder.name == "text_ngrams":
                swaps[name] = []
        elif encoder is not None and _fixed_features(encoder.name) and encoder.params.get("dim", 0) is not None:
            swaps[name] = []
        elif spec.kind == "tabular":
            swaps[name] = [f"model.encoders.{name}={{name: tabular_linear}}"]
    if not swaps:
        return []
    together = [list(swaps)] if len(swaps) > 1 or mode == "together" else []
    groups = together if mode == "together" else [[name] for name in swaps] + together
    base = ["model.fusion={name: linear}", "train.solver=convex", f"tasks.{task_name}.head.hidden=0",
            "data.augment.modality_dropout=0.0"]
    return [Candidate(f"{'+'.join(group)} linear",
                      [f"data.use=[{', '.join(group)}]", *[o for name in group for o in swaps[name]], *base])
            for group in groups]


def _fixed_features(encoder: str) -> bool:
    """Whether the registered encoder ``encoder`` is a map of fixed features (n-gram TF-IDF, cached features)."""
    from polyfuse.encoders.features import FeatureEncoder
    from polyfuse.encoders.ngrams import TextNgramEncoder
    from polyfuse.registry import ENCODERS

    factory = ENCODERS.get(encoder).factory
    return isinstance(factory, type) and issubclass(factory, (FeatureEncoder, TextNgramEncoder))


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
    if len(candidates) > 1 and config.train.solver == "convex":
        raise PolyfuseError("train.solver=convex fits one linear model, not a selection of candidates (the preset's "
                            "selection.linear adds those); use --preset fast or a preset file with selection: null")
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


def _train_candidate(config: Config, run: Path, progress: bool | None) -> RunResult:
    """One candidate's run into ``run``; its training checkpoints are removed once it is complete.

    A finished candidate is read only as a model directory (selection, ensembles, reuse after an
    interruption), and its two checkpoints weigh twice the model with the optimizer's state (434 MB
    for a drugs model that carries MiniLM): nine candidates would leave gigabytes behind."""
    result = run_training(config, run, overwrite=True, progress=progress)
    if (run / "COMPLETE").is_file():
        shutil.rmtree(run / "checkpoints", ignore_errors=True)
    return result


def _share(deadline: float | None, left: int, overhead: float = 0.0) -> float | None:
    """Training seconds for the next candidate: an equal part of what is left, less the time a
    candidate spends outside training (data, features, evaluation: ``overhead``, as measured)."""
    if deadline is None:
        return None
    return max(MIN_CANDIDATE_SECONDS, (deadline - time.perf_counter()) / max(1, left) - overhead)


def _select(
    plan: TablePlan, config: Config, candidates: list[Candidate], out: Path, deadline: float | None,
    progress: bool | None, say: Callable[[str], None], started: float,
) -> RunResult:
    monitor = config.train.monitor or ""
    mode = monitor_mode(monitor)
    overhead = 0.0  # the most a candidate spent outside training so far
    for i, cand in enumerate(candidates):
        run = out / CANDIDATES / _slug(cand.key)
        cand.run = run
        metrics = _complete(run)
        # the ensemble at the end costs about one candidate's data preparation and evaluation
        reserve = overhead if _ensemble_size(plan) > 1 else 0.0
        if metrics is None:
            if deadline is not None and i > 0 and time.perf_counter() + overhead + MIN_CANDIDATE_SECONDS > deadline - reserve:
                cand.skipped = "time limit reached"
                continue
            share = _share(None if deadline is None else deadline - reserve, len(candidates) - i, overhead)
            extra = cand.overrides + ([f"train.max_seconds={share:.0f}"] if share else [])
            t0 = time.perf_counter()
            metrics = _train_candidate(config.with_overrides(extra), run, progress).metrics
            cand.seconds = time.perf_counter() - t0
            overhead = max(overhead, cand.seconds - float(metrics.get("train_seconds") or 0.0))
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
    ensemble = None
    size = _ensemble_size(plan)
    loaded: dict[str, LoadedCheckpoint] = {}
    with remembering_extractions():  # candidates sharing a frozen backbone extract each batch once
        if size > 1 and len(ranked) > 1:
            loaded = {c.key: load_model_dir(c.run) for c in ranked[:size] if c.run is not None}
            held_out = [_valid_predictions(c, config, loaded[c.key]) for c in ranked[:size]]
            winner, ensemble = _kept(winner, _fit_ensemble(ranked[:size], held_out, config, say, _ensemble_fit(plan)))
            assert winner.run is not None
        if ensemble is not None:
            _clear_model_files(out)
            save_ensemble([(c.key, w, loaded[c.key]) for c, w in ensemble.members], out)
        else:
            _adopt(_refit_convex(winner, config, out, progress, say) or winner.run, out)
    _finish(out, plan, candidates, None if ensemble else winner, time.perf_counter() - started, ensemble=ensemble)
    return RunResult(out, json.loads((out / "metrics.json").read_text()), Config.from_yaml(out / "config.yaml"))


def _refit_convex(
    winner: Candidate, config: Config, out: Path, progress: bool | None, say: Callable[[str], None],
) -> Path | None:
    """A convex winner fitted again on its training and validation rows together (a few seconds; the
    L2 strength chosen again by cross-validation over all of them); None when it is not refit."""
    from polyfuse.data.prepare import split_rows

    if "train.solver=convex" not in winner.overrides:
        return None
    tuned = [t for t, task in config.tasks.items() if task.threshold == "tune"]
    if tuned:  # the threshold is tuned on the validation rows: a refit would lose it
        say(f"{winner.key}: not refit on the validation rows (the decision threshold of {tuned[0]} is tuned on them)")
        return None
    rows = split_rows(config.with_overrides(winner.overrides))
    if "valid" not in rows or rows["valid"].empty:
        return None
    run = out / CANDIDATES / f"{_slug(winner.key)}_refit"
    pooled = pd.concat([rows["train"], rows["valid"]])
    test = config.data.test or (_write_table(rows["test"], run / "data" / "test") if "test" in rows else None)
    refit = winner.overrides + [
        f"data.train={_write_table(pooled, run / 'data' / 'train')}", "data.valid=null", f"data.test={test or 'null'}",
        "data.split.valid=0.0", "data.split.test=0.0",
    ]
    say(f"refit {winner.key} on its {len(rows['train'])} training and {len(rows['valid'])} validation rows")
    winner.refit_rows = len(pooled)
    _train_candidate(config.with_overrides(refit), run, progress)
    return run


@dataclass
class Ensemble:
    members: list[tuple[Candidate, float]]  # (candidate, weight > 0)
    score: float  # on the rows the weights were fitted on (optimistic)
    best_single: float

    @property
    def key(self) -> str:
        return "ensemble: " + ", ".join(f"{c.key} {w:.2f}" for c, w in self.members)


def _ensemble_size(plan: TablePlan) -> int:
    return int((plan.selection or {}).get("ensemble") or 0)


def _ensemble_fit(plan: TablePlan) -> str:
    return ensemble_fit((plan.selection or {}).get("ensemble_fit"))


def _kept(winner: Candidate, ensemble: Ensemble | None) -> tuple[Candidate, Ensemble | None]:
    """(single model, ensemble): a one-member fit keeps that member alone, no fit keeps ``winner``."""
    if ensemble is not None and len(ensemble.members) == 1:
        return ensemble.members[0][0], None
    return winner, ensemble


def _task(config: Config) -> tuple[str, str, str]:
    """(task name, task type, metric) the selection ranks by."""
    _, task, metric = (config.train.monitor or "").split("/", 2)
    return task, config.tasks[task].type, metric


def _valid_predictions(cand: Candidate, config: Config, loaded: LoadedCheckpoint) -> MemberPredictions | None:
    assert cand.run is not None
    try:
        return member_predictions(cand.run, "valid", _task(config)[0], loaded=loaded)
    except PolyfuseError:
        return None


def _fit_ensemble(
    cands: list[Candidate], held_out: list[MemberPredictions | None], config: Config, say: Callable[[str], None],
    fit: str = "metric",
) -> Ensemble | None:
    """Greedy ensemble weights on held-out predictions, fitted to the selection metric or (``fit``
    ``log_loss``, classification) to the log-loss; one member when it alone is as good (the
    caller keeps it as the single model); None when fewer than two candidates can be compared."""
    pairs = [(c, p) for c, p in zip(cands, held_out) if p is not None]
    if len(pairs) < 2:
        return None
    first = pairs[0][1]
    same = [(c, p) for c, p in pairs if np.array_equal(p.rows, first.rows) and p.classes == first.classes]
    if len(same) < len(pairs):
        say(f"ensemble: {len(pairs) - len(same)} candidate(s) left out (other held-out rows or classes)")
    if len(same) < 2:
        return None
    _, kind, metric = _task(config)
    mode = monitor_mode(config.train.monitor or "")
    score = metric_function(kind, metric)
    own = [score(p.preds, first.labels) for _, p in same]
    keep = close_to_best(own, mode)
    if not all(keep):
        dropped = ", ".join(f"{c.key} {s:.4f}" for (c, _), s, k in zip(same, own, keep) if not k)
        say(f"ensemble: left out as far weaker than the best on the held-out rows ({metric}): {dropped}")
    same = [pair for pair, k in zip(same, keep) if k]
    if len(same) < 2:
        return None
    preds = [p.preds for _, p in same]
    if fit == "log_loss" and TASKS[kind].single_label:  # preds: class probabilities [N, C]
        weights, _ = greedy_weights(preds, first.labels, log_loss, "min")
    else:
        weights, _ = greedy_weights(preds, first.labels, score, mode)
    value = score(sum(w * p for w, p in zip(weights, preds)), first.labels)
    members = [(c, w) for (c, _), w in zip(same, weights) if w > 0]
    best_single = score(first.preds, first.labels)
    ensemble = Ensemble(members, value, best_single)
    if len(members) < 2:  # the caller keeps this one member alone (under log-loss, not always the metric's first)
        say(f"ensemble: {members[0][0].key} alone is as good on the held-out rows; no ensemble")
        return ensemble
    say(f"{ensemble.key}: held-out {metric} {value:.4f} (best single {best_single:.4f})")
    return ensemble


def _clear_model_files(out: Path) -> None:
    """Remove a previous model (adopted or saved) from ``out``, keeping the candidates and the written table."""
    (out / "COMPLETE").unlink(missing_ok=True)
    for item in out.iterdir():
        if item.name in (CANDIDATES, CV, "data"):
            continue
        if item.is_dir():
            shutil.rmtree(item)
        else:
            item.unlink()


def _ranked(candidates: list[Candidate], mode: str) -> list[Candidate]:
    scored = [c for c in candidates if c.score is not None]
    return [scored[i] for i in by_metric([c.score for c in scored], mode)]  # type: ignore[misc]


def _folds(frame: pd.DataFrame, config: Config, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    task = next(iter(config.tasks.values()))
    labels = frame[task.column].astype(str).to_numpy()
    group = config.data.split.group
    seed = config.data.split.seed
    classification = TASKS[task.type].single_label
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
                            stratify=task.column if TASKS[task.type].single_label else None, group=config.data.split.group)
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
            run = out / CV / _slug(cand.key) / f"fold{f}"
            metrics = _complete(run)
            if metrics is None:
                if deadline is not None and (i > 0 or f > 0) and time.perf_counter() > deadline - MIN_CANDIDATE_SECONDS:
                    cand.skipped = "time limit reached"
                    break
                t0 = time.perf_counter()
                overrides = cand.overrides + base + [f"data.train={train_file}", f"data.valid={valid_file}"]
                metrics = _train_candidate(config.with_overrides(overrides), run, progress).metrics
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
    steps_per_epoch = max(1, -(-len(frame) // config.data.batch_size))
    ensemble = None
    size = _ensemble_size(plan)
    if size > 1 and len(ranked) > 1:
        with remembering_extractions():
            held_out = [_out_of_fold(c, out, folds, config) for c in ranked[:size]]
        winner, ensemble = _kept(winner, _fit_ensemble(ranked[:size], held_out, config, say, _ensemble_fit(plan)))
    chosen = [c for c, _ in ensemble.members] if ensemble else [winner]
    refits: list[tuple[Candidate, Path, Config, int]] = []
    for i, cand in enumerate(chosen):
        if i > 0 and deadline is not None and time.perf_counter() > deadline - MIN_CANDIDATE_SECONDS:
            say(f"refit of {cand.key} skipped: time limit reached")
            continue
        run = out / CV / "refit" if len(chosen) == 1 else out / CV / "refit" / _slug(cand.key)
        cfg, epochs = _refit(cand, config, pool_file, test_file, steps_per_epoch, len(frame), run, progress, say)
        refits.append((cand, run, cfg, epochs))
    if ensemble is not None and len(refits) > 1:
        weights = {c.key: w for c, w in ensemble.members}
        _clear_model_files(out)
        save_ensemble([(c.key, weights[c.key], load_model_dir(run)) for c, run, _, _ in refits], out)
        ensemble.members = [(c, weights[c.key]) for c, _, _, _ in refits]
        result_config = Config.from_yaml(out / "config.yaml")
        epochs = refits[0][3]
    else:
        cand, run, result_config, epochs = refits[0]
        ensemble = None
        _adopt(run, out)
    _finish(out, plan, candidates, None if ensemble else refits[0][0], time.perf_counter() - started,
            refit_epochs=epochs, ensemble=ensemble)
    return RunResult(out, json.loads((out / "metrics.json").read_text()), result_config)


def _slug(key: str) -> str:
    return key.replace(" ", "_").replace("+", "_")


def _refit(
    cand: Candidate, config: Config, pool_file: str, test_file: str | None, steps_per_epoch: int, rows: int,
    run: Path, progress: bool | None, say: Callable[[str], None],
) -> tuple[Config, int]:
    """Train ``cand`` on every training row for the median step count of its folds, into ``run``."""
    # the refit runs the schedule the folds ran (same number of optimizer steps, same decay): on a
    # tiny table the epoch of the best fold score is noise, the end of a regularized schedule is not
    steps = int(statistics.median(cand.steps)) if cand.steps else config.train.max_steps
    epochs = max(1, -(-max(1, steps) // steps_per_epoch))
    refit = cand.overrides + [
        f"data.train={pool_file}", "data.valid=null", f"data.test={test_file or 'null'}",
        "data.split.valid=0.0", "data.split.test=0.0", f"train.epochs={epochs}",
        f"train.max_steps={epochs * steps_per_epoch}", "train.min_steps=0", "train.early_stopping.patience=null",
        f"train.eval_every_n_epochs={max(1, epochs)}",
    ] + [f"tasks.{t}.threshold=none" for t in config.tasks]
    if "train.solver=convex" not in cand.overrides:  # a convex fit keeps the metric its cross-validation scores
        refit.append("train.monitor=null")
    say(f"refit {cand.key} on all {rows} training rows for {epochs} epochs (the folds' median length)")
    if _complete(run) is not None:  # a finished refit of the same length (an interrupted selection resumed)
        previous = Config.from_yaml(run / "config.yaml")
        if previous.train.epochs == epochs:
            return previous, epochs
    result = _train_candidate(config.with_overrides(refit), run, progress)
    return result.config, epochs


def _out_of_fold(
    cand: Candidate, out: Path, folds: list[tuple[np.ndarray, np.ndarray]], config: Config,
) -> MemberPredictions | None:
    """The candidate's predictions on every training row, each from the fold model that did not see it."""
    if len(cand.scores) != len(folds):
        return None
    task = _task(config)[0]
    parts = []
    for f, (_, va) in enumerate(folds):
        run = out / CV / _slug(cand.key) / f"fold{f}"
        try:
            got = member_predictions(run, "valid", task)
        except PolyfuseError:
            return None
        if len(got.rows) != len(va) or (parts and got.classes != parts[0][1].classes):
            return None
        parts.append((va[got.rows], got))
    index = np.concatenate([p[0] for p in parts])
    order = np.argsort(index, kind="stable")
    return MemberPredictions(
        out / CV / _slug(cand.key), index[order],
        np.concatenate([p[1].preds for p in parts])[order], np.concatenate([p[1].labels for p in parts])[order],
        parts[0][1].classes,
    )


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
    refit_epochs: int | None = None, ensemble: Ensemble | None = None,
) -> None:
    """Preset choices (already in the report via the config) plus the leaderboard and totals."""
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics["preset"] = plan.preset
    metrics["total_seconds"] = round(seconds, 2)
    lines = []
    if candidates:
        how = f"{plan.cv_folds}-fold cross-validation" if plan.cv_folds else "the validation split"
        if ensemble is not None:
            held = "out-of-fold predictions" if plan.cv_folds else "the validation rows"
            kept = ("the weighted average of the members' predictions (weights fitted greedily on "
                    f"{held}) is the model of this directory: {ensemble.key}. Its held-out score, "
                    f"{ensemble.score:.4f} against {ensemble.best_single:.4f} for the best single candidate, "
                    "is optimistic: the weights were fitted on those rows.")
        else:
            kept = "the best is the model of this directory."
        lines += ["", "## Selection", "", f"Candidates scored on {how}; {kept}"
                  + (f" Refit on every training row for {refit_epochs} epochs." if refit_epochs else ""), "",
                  "| rank | candidate | valid score | train s | note |", "|---|---|---|---|---|"]
        mode = monitor_mode(plan.config.train.monitor or "")
        ranked = _ranked(candidates, mode)
        rest = [c for c in candidates if c not in ranked]
        board = []
        for rank, cand in enumerate(ranked + rest, start=1):
            score = "-" if cand.score is None else (
                f"{cand.score:.4f}" + (f" ± {statistics.pstdev(cand.scores):.4f}" if len(cand.scores) > 1 else ""))
            weight = dict((c.key, w) for c, w in ensemble.members).get(cand.key) if ensemble else None
            chosen = "chosen" + (f", refit on {cand.refit_rows} rows (training + validation)" if cand.refit_rows else "")
            note = chosen if cand is winner else (f"ensemble weight {weight:.2f}" if weight else (cand.skipped or ""))
            lines.append(f"| {rank if cand.score is not None else '-'} | {cand.key} | {score} | {cand.seconds:.1f} | {note} |")
            board.append({"candidate": cand.key, "score": cand.score, "scores": cand.scores, "seconds": round(cand.seconds, 2),
                          "skipped": cand.skipped, "chosen": cand is winner, "refit_rows": cand.refit_rows})
        metrics["selection"] = {"monitor": plan.config.train.monitor, "folds": plan.cv_folds, "candidates": board,
                                "chosen": winner.key if winner else ("ensemble" if ensemble else None),
                                "refit_epochs": refit_epochs}
        if ensemble is not None:
            metrics["selection"]["ensemble"] = {
                "members": [{"candidate": c.key, "weight": round(w, 4)} for c, w in ensemble.members],
                "held_out_score": ensemble.score, "best_single_held_out": ensemble.best_single,
            }
        (out / "leaderboard.md").write_text("\n".join(lines[2:]) + "\n", encoding="utf-8")
    lines += ["", f"Total time: {seconds:.1f} s (preset `{plan.preset}`).", ""]
    report = out / "report.md"
    if report.is_file():
        report.write_text(report.read_text(encoding="utf-8").rstrip("\n") + "\n" + "\n".join(lines), encoding="utf-8")
    if metrics:
        from polyfuse.checkpoint import write_metrics

        write_metrics(out, metrics)
