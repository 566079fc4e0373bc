"""The README's "Other tasks" figures: each recipe trained with `polyfuse train`, its test results recorded.

    python benchmarks/bench_tasks.py                       # easy-vqa, easy-vqa-caption, emoji-retrieval,
                                                           # easy-vqa-matching, avmnist-translation
    python benchmarks/bench_tasks.py --tasks clothing-reviews-fused   # ~45 min on 2 cores

Writes ``benchmarks/results/bench_tasks.{md,json}`` (merged with earlier runs of other recipes), with
the date, the machine and the command; paths are relative to the repository.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine_info, write_results  # noqa: E402

DEFAULT = ["easy-vqa", "easy-vqa-caption", "emoji-retrieval", "easy-vqa-matching", "avmnist-translation"]
KNOWN = [*DEFAULT, "clothing-reviews-fused"]


def run_recipe(recipe: str, root: Path, overrides: list[str]) -> dict[str, Any]:
    out = root / recipe
    command = [sys.executable, "-m", "polyfuse.cli", "train", recipe, "--out", str(out), "--overwrite", "--no-progress", *overrides]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{recipe} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "recipe": recipe, "seconds": round(seconds, 1), "train_seconds": metrics.get("train_seconds"),
        "test": metrics.get("test", {}), "retrieval": (metrics.get("retrieval") or {}).get("test"),
        "matching": (metrics.get("matching") or {}).get("test"),
        "command": " ".join(["polyfuse", "train", recipe, *overrides]),
    }


def _summary(result: dict[str, Any]) -> str:
    parts = []
    for task, values in (result.get("test") or {}).items():
        if isinstance(values, dict):
            parts.append(f"{task}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    for objective, directions in (result.get("retrieval") or {}).items():
        for direction, values in directions.items():
            keys = [k for k in ("R@1", "R@5", "R@10", "median_rank", "queries") if k in values]
            parts.append(f"{objective} {direction}: " + ", ".join(f"{k} {values[k]:.3f}" if isinstance(values[k], float)
                                                                 else f"{k} {values[k]}" for k in keys))
    for objective, values in (result.get("matching") or {}).items():
        parts.append(f"{objective} matching: acc {values['acc']:.4f} (positives {values['positives']:.4f}, "
                     f"negatives {values['negatives']:.4f}, {values['pairs']} pairs, one random negative each)")
    rows = (result.get("test") or {}).get("rows")
    return "; ".join(p for p in parts if not p.startswith("rows")) + (f" ({rows} test rows)" if rows else "")


def markdown(results: dict[str, dict[str, Any]], info: dict[str, Any]) -> str:
    lines = ["# Other tasks: recipes trained with `polyfuse train`, test split", "",
             f"Machine: {info['platform']}, {info['cpus']} CPUs, Python {info['python']}, torch {info['torch']}.", "",
             "| recipe | command | test results | wall s | date |", "|---|---|---|---|---|"]
    for name, result in results.items():
        lines.append(f"| {name} | `{result['command']}` | {_summary(result)} | {result['seconds']:.0f} | {result['date']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(DEFAULT), help=f"comma list of {', '.join(KNOWN)}")
    parser.add_argument("--root", type=Path, default=Path("runs/bench-tasks"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_tasks.md")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides applied to every recipe")
    args = parser.parse_args()
    previous = json.loads(args.out.with_suffix(".json").read_text()) if args.out.with_suffix(".json").is_file() else {}
    results: dict[str, dict[str, Any]] = dict(previous.get("results", {}))
    info = machine_info()
    for recipe in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        if recipe not in KNOWN:
            raise SystemExit(f"unknown task {recipe!r}; known: {', '.join(KNOWN)}")
        print(f"{recipe}: training", file=sys.stderr)
        result = run_recipe(recipe, args.root, list(args.overrides))
        result["date"] = date.today().isoformat()
        result["machine"] = info
        results[recipe] = result
        print(f"{recipe}: {_summary(result)} in {result['seconds']:.0f} s", file=sys.stderr)
        write_results(args.out, markdown(results, info), {"results": results})


if __name__ == "__main__":
    main()
