"""Scale: sharding speed, and memory / time to first step / samples/s training from shards vs a plain manifest.

Usage::

    python benchmarks/bench_scale.py                      # 200,000 rows (about 10 minutes on 2 cores)
    python benchmarks/bench_scale.py --rows 20000 --sizes 5000,10000,20000 --steps 40   # quick

The manifest repeats built-in AV-MNIST's 2,100 real rows (MFCC ``.npy`` + MNIST ``.png``, labels
kept) up to ``--rows``; rows reference the same files many times. Measured:

1. sharding rows/s with 1 and 2 workers (``polyfuse data shard``'s ``write_shards``) on a
   ``--shard-rows`` slice, then the whole manifest with 2 workers (valid / test 0.5% each);
2. training from the shards for ``--steps`` optimizer steps with ``data.max_train_rows`` set to
   each of ``--sizes``: the training process's peak RSS (``wait4``; loader workers are separate
   processes), time from process start to the first optimizer step, samples/s over the steps after
   the first 5; and samples/s with 0, 1 and 2 loader workers at the largest size;
3. the same from the plain manifest (``data.train: MANIFEST``), which reads the rows lazily when the
   table is over ``data.lazy_rows`` (``data.scan: auto``), and with ``data.scan=full`` (every row
   decoded and cached before the first step) at the smallest size.

Each training runs in its own process (``--child``). Prints a markdown table and writes it with
the JSON to ``--out`` (default ``benchmarks/results/bench_scale.md`` / ``.json``).
Targets (issue 14): peak RSS from shards flat within 10% from the smallest to the largest size;
time to first step <= 15 s at the largest.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import machine_info, write_results  # benchmarks/_common.py

RESULTS = Path(__file__).resolve().parent / "results"
RSS_FLAT = 0.10
FIRST_STEP_S = 15.0


def build_manifest(work: Path, rows: int) -> tuple[Path, Path]:
    """(manifest, root): AV-MNIST's training rows repeated up to ``rows``, paths relative to its folder."""
    import pandas as pd

    import polyfuse.data  # noqa: F401
    from polyfuse.registry import DATASETS

    prepared = DATASETS.get("avmnist").factory()
    base = pd.read_csv(prepared.train)[["audio", "image", "label"]]
    frame = pd.concat([base] * (rows // len(base) + 1), ignore_index=True).iloc[:rows]
    path = work / f"avmnist-x{rows}.csv"
    if not path.is_file():
        frame.to_csv(path, index=False)
    return path, Path(prepared.root)


def shard_config(manifest: Path, root: Path, split: float) -> Any:
    from polyfuse.config import Config

    return Config.from_dict({
        "data": {"train": str(manifest), "root": str(root), "split": {"valid": split, "test": split},
                 "inputs": {"audio": {"kind": "sequence", "column": "audio"},
                            "image": {"kind": "image", "column": "image", "channels": 1}}},
        "tasks": {"label": {"column": "label", "type": "classification"}},
    })


# ---------------------------------------------------------------------------- one training (child process)


def child(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    import lightning as L

    import polyfuse
    from polyfuse.config import Config

    class Timer(L.Callback):
        def __init__(self) -> None:
            self.steps: list[float] = []

        def on_train_batch_start(self, trainer: Any, *a: Any) -> None:
            self.steps.append(time.perf_counter())

    timer = Timer()
    config = Config.from_yaml(args.data, json.loads(args.overrides))
    import polyfuse.train.runner as runner

    progress = runner._progress_callbacks
    runner._progress_callbacks = lambda show: [*progress(show), timer]
    result = polyfuse.fit(config, out=args.out, overwrite=True)
    steps = timer.steps
    batch = config.data.batch_size
    timed = steps[5:]
    print("RESULT " + json.dumps({
        "first_step_s": round(steps[0] - started, 2),
        "samples_per_s": round(batch * (len(timed) - 1) / (timed[-1] - timed[0]), 1) if len(timed) > 1 else None,
        "steps": len(steps), "test_acc": (result.metrics.get("test") or {}).get("label", {}).get("acc"),
    }))


def train(data: Path, out: Path, overrides: list[str]) -> dict[str, Any]:
    """Run one training of config file ``data`` in a child process; its result and peak RSS (MB)."""
    command = [sys.executable, __file__, "--child", "--data", data, "--out-run", str(out), "--overrides", json.dumps(overrides)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"training failed ({data}, {overrides}):\n{stderr[-3000:]}")
    line = next(l for l in stdout.splitlines() if l.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    result["peak_rss_mb"] = _peak_rss_mb(stderr)
    return result


def _peak_rss_mb(stderr: str) -> float | None:
    for line in stderr.splitlines()[::-1]:
        if line.startswith("PEAK_RSS_KB "):
            return round(int(line.split()[1]) / 1024, 1)
    return None


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--sizes", default="50000,100000,200000")
    parser.add_argument("--shard-rows", type=int, default=20_000, help="rows of the slice timed with 1 and 2 workers")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: $POLYFUSE_CACHE/bench_scale)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_scale.md")
    parser.add_argument("--no-sweep", action="store_true", help="skip the 0/1-worker runs and the full-scan run (the tests' tiny version)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out-run", dest="out_run", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import atexit
        import resource

        atexit.register(lambda: print(f"PEAK_RSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr))
        args.out = args.out_run
        child(args)
        return

    from polyfuse.data.datasets.base import cache_root
    from polyfuse.data.shard_writer import write_shards

    sizes = [int(s) for s in args.sizes.split(",")]
    work = args.work or cache_root() / "bench_scale"
    work.mkdir(parents=True, exist_ok=True)
    manifest, root = build_manifest(work, args.rows)
    report: dict[str, Any] = {"rows": args.rows, "sizes": sizes, "steps": args.steps, "machine": machine_info()}

    # 1. sharding speed
    small, _ = build_manifest(work, args.shard_rows)
    report["sharding"] = {}
    for workers in (1, 2):
        summary = write_shards(shard_config(small, root, 0.005), work / f"shards-{args.shard_rows}-w{workers}",
                               workers=workers, overwrite=True, progress=False)
        report["sharding"][workers] = {"rows": summary["rows"], "seconds": summary["seconds"], "rows_per_s": summary["rows_per_s"]}
        print(f"sharding {summary['rows']} rows with {workers} worker(s): {summary['rows_per_s']} rows/s", file=sys.stderr)
    shards = work / f"shards-{args.rows}"
    if not (shards / "shards.json").is_file():
        summary = write_shards(shard_config(manifest, root, 0.005), shards, workers=2, overwrite=True, progress=False)
        report["sharding"]["all"] = {"rows": summary["rows"], "seconds": summary["seconds"], "rows_per_s": summary["rows_per_s"], "workers": 2}
        print(f"sharding all {summary['rows']} rows: {summary['seconds']} s", file=sys.stderr)

    base = [f"train.max_steps={args.steps}", "train.progress=false", "train.threads=1", "data.batch_size=64",
            "model.encoders.audio=sequence_cnn", "train.eval_every_n_epochs=1000"]
    runs: list[dict[str, Any]] = []

    from polyfuse.config import Config

    from_shards = work / "from-shards.yaml"
    Config.from_dict({"data": {"train": f"shards://{shards}"}}).to_yaml(from_shards)
    from_manifest = work / "from-manifest.yaml"
    shard_config(manifest, root, 0.005).to_yaml(from_manifest)

    def record(source: str, rows: int, workers: int, extra: list[str], data: Path) -> None:
        overrides = [*base, f"data.num_workers={workers}", *extra]
        result = train(data, work / "run", overrides)
        result.update(source=source, rows=rows, workers=workers)
        runs.append(result)
        print(json.dumps(result), file=sys.stderr)

    largest = max(sizes)
    for rows in sizes:  # memory and time to first step vs rows, from shards
        record("shards", rows, 2, [f"data.max_train_rows={rows}"], from_shards)
    for workers in () if args.no_sweep else (0, 1):
        record("shards", largest, workers, [f"data.max_train_rows={largest}"], from_shards)
    for rows in sizes:
        record("manifest (scan auto)", rows, 2, [f"data.max_train_rows={rows}"], from_manifest)
    if not args.no_sweep:
        record("manifest (scan full)", min(sizes), 2, [f"data.max_train_rows={min(sizes)}", "data.scan=full"], from_manifest)
    report["runs"] = runs

    shard_rss = [r["peak_rss_mb"] for r in runs if r["source"] == "shards" and r["workers"] == 2]
    rss_growth = max(shard_rss) / min(shard_rss) - 1
    first = next(r["first_step_s"] for r in runs if r["source"] == "shards" and r["rows"] == largest and r["workers"] == 2)
    report["targets"] = {
        "rss_growth_from_shards": round(rss_growth, 3), "rss_flat": rss_growth <= RSS_FLAT,
        "first_step_s_at_largest": first, "first_step_ok": first <= FIRST_STEP_S,
    }
    lines = [
        f"## Scale: {args.rows:,} rows (AV-MNIST repeated), {args.steps} steps of batch 64, torch threads 1",
        "",
        "Sharding (`write_shards`, decode check of every row + raw bytes into webdataset tars):",
        "",
        "| workers | rows | seconds | rows/s |",
        "|---|---|---|---|",
        *[f"| {w} | {v['rows']} | {v['seconds']} | {v['rows_per_s']} |" for w, v in report["sharding"].items()],
        "",
        "| data path | training rows | loader workers | peak RSS (MB, training process) | time to first step (s) | samples/s |",
        "|---|---|---|---|---|---|",
        *[f"| {r['source']} | {r['rows']:,} | {r['workers']} | {r['peak_rss_mb']} | {r['first_step_s']} | {r['samples_per_s']} |" for r in runs],
        "",
        f"Peak RSS from shards, {min(sizes):,} -> {largest:,} rows: {rss_growth:+.1%} (target within {RSS_FLAT:.0%}: "
        f"{'PASS' if rss_growth <= RSS_FLAT else 'FAIL'}); time to first step at {largest:,} rows: {first} s "
        f"(target <= {FIRST_STEP_S:.0f} s: {'PASS' if first <= FIRST_STEP_S else 'FAIL'}).",
        "",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    write_results(args.out, markdown, report)


if __name__ == "__main__":
    main()
