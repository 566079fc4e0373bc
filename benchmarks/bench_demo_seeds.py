"""How far the demo's figures move with the seed (and with the thread count), measured.

    python benchmarks/bench_demo_seeds.py --seeds 0,1,2

Runs ``polyfuse demo`` once per seed (its defaults: deterministic kernels, 2 threads), then seed 0
with 1 thread, and writes ``benchmarks/results/bench_demo_seeds.{md,json}``: per run the three test
accuracies, and per model the mean, standard deviation and range over the seeds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine_info, write_results  # noqa: E402

MODELS = ("audio", "image", "fused")


def run(out: Path, overrides: list[str]) -> dict[str, Any]:
    from polyfuse.commands.demo import run_demo

    started = time.perf_counter()
    summary = run_demo(out, overrides=overrides, progress=False)
    return {"overrides": overrides, **{m: float(summary[m]) for m in MODELS}, "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--root", type=Path, default=Path("runs/bench-demo-seeds"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_demo_seeds.md")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    runs = []
    for seed in seeds:
        runs.append({"seed": seed, "threads": 2, **run(args.root / f"seed{seed}", [f"train.seed={seed}"])})
        print(f"seed {seed}: " + ", ".join(f"{m} {runs[-1][m]:.4f}" for m in MODELS), file=sys.stderr)
    runs.append({"seed": seeds[0], "threads": 1, **run(args.root / f"seed{seeds[0]}-1thread", [f"train.seed={seeds[0]}", "train.threads=1"])})
    spread = {}
    for m in MODELS:
        values = [r[m] for r in runs if r["threads"] == 2]
        spread[m] = {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "min": min(values), "max": max(values)}
    info = machine_info(date=date.today().isoformat())
    lines = ["# polyfuse demo across seeds", "", f"Command: `python benchmarks/bench_demo_seeds.py --seeds {args.seeds}`", "",
             f"Machine: {info['platform']}, {info['cpus']} CPUs, torch {info['torch']}; {info['date']}.", "",
             "| seed | threads | audio | image | fused | s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['threads']} | {r['audio']:.4f} | {r['image']:.4f} | {r['fused']:.4f} | {r['seconds']:.0f} |" for r in runs]
    lines += ["", f"Over seeds {args.seeds} (2 threads):", "", "| model | mean | std | min | max |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {s['mean']:.4f} | {s['std']:.4f} | {s['min']:.4f} | {s['max']:.4f} |" for m, s in spread.items()]
    write_results(args.out, "\n".join(lines) + "\n", {"machine": info, "runs": runs, "spread": spread})


if __name__ == "__main__":
    main()
