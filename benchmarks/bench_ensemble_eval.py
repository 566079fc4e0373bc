"""Building an ensemble from a selection run: with and without remembering extracted features.

Usage::

    python benchmarks/bench_tables.py --tables drugs --presets best --root runs/bt   # any run with an ensemble
    python benchmarks/bench_ensemble_eval.py --run runs/bt/runs/drugs-best

What a `best` / `medium` selection does after its candidates are trained, timed as a whole: load the
top candidates, predict the validation rows with each (the greedy weights are fitted on these), then
``save_ensemble`` (build the ensemble, evaluate it on valid and test with the modality contribution,
save it). Both sides run the run's own ensemble members and weights, inside one
``remembering_extractions()`` block as the selection does; the "without" side sets the memo's
capacity to 0 bytes, so every batch is extracted again (as before the memo). The sides alternate,
``--repeats`` times each. The saved ensembles' metrics must be identical on both sides.

Prints a markdown table and writes it with the JSON to ``--out`` (default
``benchmarks/results/bench_ensemble_eval.md`` and ``.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine_info, warn_if_busy, write_results  # benchmarks/_common.py


def rebuild(run: Path, ranked: list[str], members: list[dict[str, Any]], task: str) -> tuple[float, dict[str, Any]]:
    """Seconds to predict the ``ranked`` candidates' validation rows and save the ensemble; its metrics."""
    from polyfuse.checkpoint import load_model_dir
    from polyfuse.encoders.extraction_memo import remembering_extractions
    from polyfuse.train.ensemble import member_predictions, save_ensemble
    from polyfuse.train.table_fit import CANDIDATES, _slug

    started = time.perf_counter()
    with remembering_extractions(), tempfile.TemporaryDirectory() as tmp:
        loaded = {key: load_model_dir(run / CANDIDATES / _slug(key)) for key in ranked}
        for key, model in loaded.items():
            member_predictions(run / CANDIDATES / _slug(key), "valid", task, loaded=model)
        metrics = save_ensemble([(m["member"], float(m["weight"]), loaded[m["member"]]) for m in members], Path(tmp))
    return time.perf_counter() - started, metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a selection run directory whose model is an ensemble")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--top", type=int, default=5, help="candidates whose validation rows are predicted (the preset's ensemble size)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_ensemble_eval.md")
    args = parser.parse_args(argv)

    from polyfuse.encoders.extraction_memo import DEFAULT_MAX_BYTES, MEMO

    warn_if_busy()
    metrics = json.loads((args.run / "metrics.json").read_text())
    members = metrics.get("ensemble")
    if not members:
        print(f"{args.run}: its model is not an ensemble (metrics.json has no 'ensemble')", file=sys.stderr)
        return 2
    if (metrics.get("selection") or {}).get("folds"):
        print(f"{args.run}: a cross-validated selection (its members are refits); give a run with a validation split",
              file=sys.stderr)
        return 2
    task = (metrics["selection"]["monitor"] or "").split("/")[1]
    board = [c["candidate"] for c in metrics["selection"]["candidates"] if c.get("score") is not None]
    ranked = list(dict.fromkeys([*board[: args.top], *[m["member"] for m in members]]))  # what the selection predicts
    seconds: dict[str, list[float]] = {"with": [], "without": []}
    results: dict[str, dict[str, Any]] = {}
    for repeat in range(args.repeats):
        for side in (("without", "with") if repeat % 2 == 0 else ("with", "without")):
            MEMO.max_bytes = DEFAULT_MAX_BYTES if side == "with" else 0
            took, got = rebuild(args.run, ranked, members, task)
            seconds[side].append(took)
            results[side] = {s: got[s] for s in ("valid", "test") if s in got}
            print(f"repeat {repeat + 1} {side}: {took:.1f} s", flush=True)
    MEMO.max_bytes = DEFAULT_MAX_BYTES
    same = results["with"] == results["without"]
    ratio = statistics.median(seconds["without"]) / statistics.median(seconds["with"])
    listed = ", ".join(f"{m['member']} {m['weight']:.2f}" for m in members)
    lines = [
        f"## Ensemble building from `{args.run.name}`: with and without remembered extractions\n",
        f"Members: {listed}; validation rows predicted by "
        f"{len(ranked)} candidates; task `{task}`; "
        f"{args.repeats} alternating repeats per side (validation predictions of each member, then `save_ensemble`: "
        "evaluation on valid and test with the modality contribution, saving).\n",
        "| side | seconds (median) | per repeat |",
        "|---|---|---|",
        *(f"| {side} | {statistics.median(v):.1f} | {', '.join(f'{x:.1f}' for x in v)} |" for side, v in seconds.items()),
        "",
        f"**speed-up: {ratio:.2f}x**; saved metrics identical on both sides: {'yes' if same else 'NO'}.",
    ]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    write_results(args.out, markdown, {"run": str(args.run), "seconds": seconds, "speedup": ratio, "identical": same,
                                       "members": members, "machine": machine_info()})
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
