"""Replay the choice of finished selections under other ranking rules, without training anything.

    python benchmarks/selection_replay.py RUN [RUN ...] --out benchmarks/results/selection_replay.md

Each RUN is a finished ``polyfuse train`` selection directory (``RUN/candidates/*``, e.g. the
``runs/<table>-medium`` folders ``bench_tables.py --root`` leaves). Every complete candidate is
loaded once and predicts its own validation and test rows; then each rule picks from those
predictions alone (validation), and the pick's test score is what the rule would have given:

- ``metric``: the selection metric on validation (polyfuse's rule until this replay).
- ``metric, ties by log-loss``: within one validation row of the best, the lowest validation log-loss.
- ``log-loss``: the lowest validation log-loss alone.
- ``ensemble on <metric|log-loss>``: the top 4 (or N of `--pool-sizes`) by the rule above it, Caruana's greedy weights fitted on
  validation to the metric or to the log-loss; the weighted average's test score.

Candidates are scored as trained on the training rows (a convex winner's refit on training +
validation rows, which the real selection adds, is left out of every rule alike). Cross-validated
selections (``RUN/cv``) hold no per-candidate test predictions and are skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_info, write_results  # noqa: E402

from polyfuse.train.ranking import by_metric, log_loss  # noqa: E402

ENSEMBLE_SIZE = 4
#: the rule ``medium`` used before ``selection.ensemble_fit: log_loss``: the top 4 by the metric, weights fitted to it
CURRENT = "ensemble on metric (pool: metric)"


@dataclass
class Scored:
    key: str
    valid: Any  # MemberPredictions
    test: Any
    valid_score: float
    valid_loss: float | None


def load_candidates(run: Path) -> tuple[list[Scored], str, str, str]:
    """The run's complete candidates with their validation / test predictions; (list, task, type, metric)."""
    from polyfuse.checkpoint import load_model_dir
    from polyfuse.train.ensemble import member_predictions, metric_function
    from polyfuse.train.ranking import log_loss

    monitor = json.loads((run / "metrics.json").read_text()).get("monitor") or ""
    out: list[Scored] = []
    task = kind = metric = ""
    for cand in sorted((run / "candidates").iterdir()):
        if not (cand / "COMPLETE").is_file() or cand.name.endswith("_refit"):
            continue
        loaded = load_model_dir(cand)
        monitor = loaded.metrics.get("monitor") or monitor
        _, task, metric = monitor.split("/", 2)
        kind = loaded.config.tasks[task].type
        valid = member_predictions(cand, "valid", task, loaded=loaded)
        test = member_predictions(cand, "test", task, loaded=loaded)
        score = metric_function(kind, metric)(valid.preds, valid.labels)
        loss = log_loss(valid.preds, valid.labels) if valid.preds.ndim == 2 else None
        out.append(Scored(cand.name, valid, test, score, loss))
    return out, task, kind, metric


def by_metric_then_loss(
    scores: Sequence[float], losses: Sequence[float | None], rows: int, mode: str, rows_tied: float = 1.0,
) -> list[int]:
    """Indices: those within ``rows_tied`` rows (of ``rows`` held-out rows) of the best metric first,
    by held-out log-loss (a missing loss sorts last among them); then the rest by metric."""
    order = by_metric(scores, mode)
    if not order or rows <= 0:
        return order
    best = scores[order[0]]
    margin = rows_tied / rows + 1e-12
    tied = [i for i in order if abs(scores[i] - best) <= margin]
    rest = [i for i in order if i not in tied]
    tied.sort(key=lambda i: (losses[i] is None or not np.isfinite(losses[i]), losses[i] if losses[i] is not None else 0.0))
    return tied + rest


def replay(cands: list[Scored], kind: str, metric: str, pool_sizes: tuple[int, ...] = (ENSEMBLE_SIZE,)) -> dict[str, dict[str, Any]]:
    """Each rule's pick (or ensemble, from the top ``pool_sizes`` candidates) and its test score."""
    from polyfuse.train.ensemble import close_to_best, greedy_weights, metric_function
    from polyfuse.train.metrics import monitor_mode

    mode = monitor_mode(metric)
    score = metric_function(kind, metric)
    scores = [c.valid_score for c in cands]
    losses = [c.valid_loss for c in cands]
    rows = len(cands[0].valid.labels)
    classification = all(v is not None for v in losses)
    orders: dict[str, list[int]] = {"metric": by_metric(scores, mode)}
    if classification:
        orders["metric, ties by log-loss"] = by_metric_then_loss(scores, losses, rows, mode)
        orders["log-loss"] = sorted(range(len(cands)), key=lambda i: losses[i])  # type: ignore[arg-type, return-value]
    out: dict[str, dict[str, Any]] = {}
    for rule, order in orders.items():
        pick = cands[order[0]]
        out[rule] = {"pick": pick.key, "test": score(pick.test.preds, pick.test.labels)}
    fits: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"metric": score}
    if classification:
        fits["log-loss"] = lambda p, y: log_loss(p, y)
    for size in pool_sizes:
        for rule, order in orders.items():
            top = [cands[i] for i in order[:size]]
            keep = close_to_best([c.valid_score for c in top], mode)
            pool = [c for c, k in zip(top, keep) if k]
            for fit_name, fit in fits.items():
                fit_mode = "min" if fit_name == "log-loss" else mode
                weights, _ = greedy_weights([c.valid.preds for c in pool], pool[0].valid.labels, fit, fit_mode)
                mixed = sum(w * c.test.preds for w, c in zip(weights, pool))
                members = ", ".join(f"{c.key} {w:.2f}" for c, w in zip(pool, weights) if w > 0)
                name = f"ensemble on {fit_name} (pool: {rule}{'' if size == ENSEMBLE_SIZE else f', top {size}'})"
                out[name] = {"pick": members, "test": score(mixed, pool[0].test.labels)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/selection_replay.md"))
    parser.add_argument("--pool-sizes", default=str(ENSEMBLE_SIZE),
                        help=f"comma list of ensemble pool sizes (top N candidates) to replay; {ENSEMBLE_SIZE} is medium's")
    args = parser.parse_args(argv)
    sizes = tuple(int(v) for v in args.pool_sizes.split(",") if v.strip())
    from polyfuse.train.metrics import monitor_mode

    results = []
    for run in args.runs:
        if (run / "cv").is_dir() or not (run / "candidates").is_dir():
            print(f"{run}: skipped (cross-validated, or not a selection)", file=sys.stderr)
            continue
        cands, _, kind, metric = load_candidates(run)
        if len(cands) < 2:
            continue
        rules = replay(cands, kind, metric, sizes)
        results.append({"run": str(run), "metric": metric, "higher_is_better": monitor_mode(metric) == "max",
                        "valid_rows": len(cands[0].valid.labels), "rules": rules,
                        "candidates": [{"key": c.key, "valid": c.valid_score, "valid_log_loss": c.valid_loss,
                                        "test": _test(c, kind, metric)} for c in cands]})
        print(f"{run}: " + "; ".join(f"{k} {v['test']:.4f}" for k, v in rules.items()), file=sys.stderr)
    write_results(args.out, _markdown(results), {"machine": machine_info(), "command": " ".join(sys.argv), "results": results})
    return 0


def _test(c: Scored, kind: str, metric: str) -> float:
    from polyfuse.train.ensemble import metric_function

    return metric_function(kind, metric)(c.test.preds, c.test.labels)


def _markdown(results: list[dict[str, Any]]) -> str:
    rules = list(dict.fromkeys(r for res in results for r in res["rules"]))
    lines = ["# Selection rules replayed on finished selections", "",
             f"Command: `{' '.join(sys.argv)}`", "",
             "Test score of what each rule picks from the same trained candidates (validation only decides).", "",
             "| run | metric | valid rows | " + " | ".join(rules) + " |", "|---|---|---|" + "---|" * len(rules)]
    for res in results:
        cells = [f"{res['rules'][r]['test']:.4f}" if r in res["rules"] else "-" for r in rules]
        lines.append(f"| {Path(res['run']).name} | {res['metric']} | {res['valid_rows']} | " + " | ".join(cells) + " |")
    for reference in ("metric", CURRENT):
        lines += ["", f"Mean test change against `{reference}` (positive is better), and runs better / worse:", "",
                  "| rule | runs | mean change | better | worse |", "|---|---|---|---|---|"]
        for rule in rules:
            diffs = []
            for res in results:
                if rule in res["rules"] and reference in res["rules"]:
                    d = res["rules"][rule]["test"] - res["rules"][reference]["test"]
                    diffs.append(d if res["higher_is_better"] else -d)
            if diffs:
                lines.append(f"| {rule} | {len(diffs)} | {statistics.fmean(diffs):+.4f} | {sum(d > 1e-9 for d in diffs)} "
                             f"| {sum(d < -1e-9 for d in diffs)} |")
    lines += ["", "Picks:", ""]
    for res in results:
        lines.append(f"- {Path(res['run']).name}: " + "; ".join(f"{r}: {v['pick']}" for r, v in res["rules"].items()))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
