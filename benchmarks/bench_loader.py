"""Data loader throughput vs model training throughput, for every built-in dataset.

Usage::

    python benchmarks/bench_loader.py                                   # every built-in dataset, 30 batches each
    python benchmarks/bench_loader.py --datasets avmnist easy-vqa --max-batches 5
    python benchmarks/bench_loader.py --recipe easy-vqa-captions=easy-vqa-caption --threads 1

For each dataset: its shipped recipe ``<name>`` or ``<name>-fused`` (``--recipe NAME=RECIPE`` picks
another), else the default config ``{"data": {"dataset": name}}``; ``prepare_data`` on the train split
(at most ``--max-rows`` rows, default ``--max-batches`` x the batch size, so that preparation stays
bounded); then, over the same shuffled batches of the recipe's batch size:

* loader, cold: a DataLoader with ``Collator(pipeline)`` over the train split with the row cache
  switched off, so that every row is decoded from its files again (what the first pass and every
  ``data.cache: false`` epoch cost; files are in the OS page cache after ``prepare_data``), with
  ``--workers`` worker processes (default: the core count, ``os.cpu_count()``); the same pass in the
  main process (0 workers) is reported beside it;
* loader, warm: the same with the row cache ``prepare_data`` filled (every later epoch), with
  ``--workers`` workers; all passes include the training augmentation and collation.
  With workers, a pass's rate is its steady state: the first ``workers`` batches (one per worker,
  made while the workers start) are left out, and the rate runs from the arrival of the last of them
  to the arrival of the last batch, over the rows after it; the time to the first batch (the workers'
  start, paid once per epoch since the loaders do not keep their workers) is reported beside it;
* model: forward + loss + backward (+ gradient clipping) + AdamW step of ``build_model(...)`` on the
  warm pass's pre-collated batches (the first ``--model-warmup`` untimed, timing stops after
  ``--model-seconds``), with the recipe's task losses and objectives (a config with neither trains
  on a stand-in loss, mean(pooled^2)).

The four passes run ``--repeats`` times (default 3) in turn (cold, cold without workers, warm, model;
then again), so that a machine whose speed drifts moves all of them alike; every figure is the median
over the repeats, and the cold / model ratio of each repeat is shown too. Throughputs are samples/s;
the ratios loader/model (cold and warm) are measured within one run (target: >= 2, i.e. the loader
never starves the model). A dataset whose files, fonts or packages are
missing is skipped with the reason. Prints a markdown table and writes it with the JSON to ``--out``
(default ``benchmarks/results/bench_loader.md`` and ``.json``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from _common import machine_info, warn_if_busy, write_results  # benchmarks/_common.py

TARGET = 2.0


def pick_config(name: str, chosen: dict[str, str], overrides: list[str]) -> tuple[Any, str]:
    from polyfuse.config import Config
    from polyfuse.recipes import load_recipe, recipe_names

    if name in chosen:
        return load_recipe(chosen[name], overrides), chosen[name]
    for candidate in (name, f"{name}-fused"):
        if candidate in recipe_names():
            return load_recipe(candidate, overrides), candidate
    return Config.from_dict({"data": {"dataset": name}}).with_overrides(overrides), "(default config)"


def loader_pass(dataset: Any, collate: Any, batch_size: int, workers: int, max_batches: int, seed: int,
                keep: bool) -> tuple[dict[str, Any], list[Any]]:
    """One shuffled pass of at most ``max_batches`` batches: its timings and the batches (when ``keep``).

    With workers, the timed rows and seconds leave out the first ``workers`` batches (see the module
    docstring); without, every batch is timed. The end is the last batch's arrival (not the workers' shutdown).
    """
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, collate_fn=collate, num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
    )
    kept: list[Any] = []
    rows = 0
    started = time.perf_counter()
    mark = end = started
    first: float | None = None
    for i, batch in enumerate(loader):
        now = time.perf_counter()
        first = now - started if first is None else first
        if i < workers:
            mark = now  # workers starting: not in the rate
        else:
            rows += int(batch["row"].shape[0])
        end = now
        if keep:
            kept.append(batch)
        if i + 1 >= max_batches:
            break
    seconds = end - mark
    timing = {
        "workers": workers, "seconds": seconds, "rows": rows, "samples_per_s": rows / seconds if seconds > 0 else 0.0,
        "first_batch_s": first, "batches": min(max_batches, len(loader)),
    }
    return timing, kept


def model_throughput(prepared: Any, batches: list[Any], warmup: int, seed: int, budget_s: float | None = None) -> dict[str, Any]:
    """Samples/s of full training steps of the recipe's model on pre-collated batches (timed steps stop
    once they took ``budget_s`` seconds, after at least two)."""
    import torch

    from polyfuse.build import build_model, objective_weights
    from polyfuse.train.init import parameter_groups
    from polyfuse.train.module import MultimodalLightningModule

    config, pipeline = prepared.config, prepared.pipeline
    torch.manual_seed(seed)
    task_dims = pipeline.task_dims()
    model = build_model(config, pipeline.specs(), task_dims)
    module = MultimodalLightningModule(model, config.tasks, task_dims, config.train, objective_weights(config))
    weights = module.extra_weights
    params = parameter_groups(model, config.train.weight_decay, config.train.lr)
    optimizer = torch.optim.AdamW(params, lr=config.train.lr)
    trainable = [p for g in params for p in g["params"]]
    stand_in = not config.tasks and not config.objectives
    model.train()

    def step(batch: Any) -> None:
        out = model(batch["inputs"], batch["present"], targets=batch.get("labels"))
        losses = module.losses(out, batch["labels"]) if config.tasks else {}
        loss = module.total_loss(losses) if losses else None
        for name, objective in model.objectives.items():
            term = weights[name] * objective(model, batch, out)["loss"]
            loss = term if loss is None else loss + term
        if loss is None:  # nothing to learn in this config: a stand-in loss through encoders + fusion
            loss = out.fused.pooled.float().pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, config.train.grad_clip)
        optimizer.step()

    warmup = min(warmup, len(batches) - 1)
    for batch in batches[:warmup]:
        step(batch)
    timed: list[Any] = []
    started = time.perf_counter()
    for batch in batches[warmup:]:
        step(batch)
        timed.append(batch)
        if budget_s is not None and len(timed) >= 2 and time.perf_counter() - started > budget_s:
            break
    seconds = time.perf_counter() - started
    rows = sum(int(b["row"].shape[0]) for b in timed)
    return {
        "seconds": seconds, "rows": rows, "batches": len(timed), "samples_per_s": rows / seconds,
        "parameters": sum(p.numel() for p in model.parameters()), "stand_in_loss": stand_in,
        "encoders": {n: type(e).__name__ for n, e in model.encoders.items()}, "fusion": type(model.fusion).__name__,
    }


def bench_one(name: str, args: argparse.Namespace, chosen: dict[str, str]) -> dict[str, Any]:
    from polyfuse.data.collate import Collator
    from polyfuse.data.prepare import prepare_data

    base = ["train.progress=false", "data.cache=true", *args.override]
    config, recipe = pick_config(name, chosen, base)
    batch_size = config.data.batch_size
    max_rows = args.max_rows if args.max_rows is not None else args.max_batches * batch_size
    if max_rows:
        config = config.with_overrides([f"data.max_rows={max_rows}"])
    workers = (os.cpu_count() or 1) if args.workers is None else args.workers
    started = time.perf_counter()
    prepared = prepare_data(config, splits=("train",), progress=False)
    prepare_s = time.perf_counter() - started
    train = prepared.datasets["train"]
    train.set_epoch(0)
    collate = Collator(prepared.pipeline)
    seed = prepared.config.train.seed

    # the measurements alternate, repeat after repeat, so that a machine whose speed drifts (other load,
    # a shared host) moves loader and model alike; every figure is the median over the repeats
    passes: dict[str, list[dict[str, Any]]] = {"cold": [], "cold0": [], "warm": [], "model": []}
    for _ in range(args.repeats):
        train.cache = False  # cold: every row decoded from its files again
        passes["cold"].append(loader_pass(train, collate, batch_size, workers, args.max_batches, seed, keep=False)[0])
        passes["cold0"].append(loader_pass(train, collate, batch_size, 0, args.max_batches, seed, keep=False)[0])
        train.cache = True  # warm: the rows prepare_data's scan cached
        warm_pass, batches = loader_pass(train, collate, batch_size, workers, args.max_batches, seed, keep=True)
        passes["warm"].append(warm_pass)
        passes["model"].append(model_throughput(prepared, batches, args.model_warmup, seed, args.model_seconds))
        del batches
    cold_pass, cold0_pass, warm_pass = (_median_pass(passes[k]) for k in ("cold", "cold0", "warm"))
    model = {k: v for k, v in passes["model"][0].items() if k not in ("seconds", "rows", "batches")}
    model.update(_median_pass(passes["model"]))
    cold, cold0, warm = (p["samples_per_s"] for p in (cold_pass, cold0_pass, warm_pass))
    return {
        "dataset": name,
        "recipe": recipe,
        "inputs": {n: i.kind for n, i in prepared.config.data.inputs.items()},
        "tasks": list(prepared.config.tasks),
        "objectives": list(prepared.config.objectives),
        "train_rows": len(train),
        "batch_size": batch_size,
        "workers": workers,
        "prepare_seconds": prepare_s,
        "loader_cold": cold_pass,
        "loader_cold_0_workers": cold0_pass,
        "loader_warm": warm_pass,
        "model": model,
        "ratio_cold": cold / model["samples_per_s"],
        "ratio_cold_0_workers": cold0 / model["samples_per_s"],
        "ratio_warm": warm / model["samples_per_s"],
        "ratio_cold_per_repeat": [c["samples_per_s"] / m["samples_per_s"] for c, m in zip(passes["cold"], passes["model"])],
    }


def _median_pass(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median samples/s (and time to the first batch) of repeated passes, with every pass kept."""
    import statistics

    out: dict[str, Any] = {"samples_per_s": statistics.median(r["samples_per_s"] for r in runs)}
    if runs and runs[0].get("first_batch_s") is not None:
        out["first_batch_s"] = statistics.median(r["first_batch_s"] for r in runs)
    if runs and "workers" in runs[0]:
        out["workers"] = runs[0]["workers"]
    out["repeats"] = [{k: v for k, v in r.items() if k in ("seconds", "rows", "samples_per_s", "first_batch_s")} for r in runs]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=None, help="built-in dataset names (default: all)")
    parser.add_argument("--recipe", action="append", default=[], metavar="DATASET=RECIPE",
                        help="use this recipe for that dataset")
    parser.add_argument("-o", "--override", action="append", default=[], help="dotted override for every config")
    parser.add_argument("--max-batches", type=int, default=30, help="batches per loader pass (and model steps)")
    parser.add_argument("--max-rows", type=int, default=None,
                        help="rows prepared per dataset (default: max-batches x batch size; 0 = all)")
    parser.add_argument("--model-warmup", type=int, default=2, help="untimed model steps")
    parser.add_argument("--model-seconds", type=float, default=10.0,
                        help="stop timing model steps after this long (at least two steps)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="times each pass (cold, cold without workers, warm, model) runs, alternating; medians reported")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers of the cold and warm passes (default: os.cpu_count())")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_loader.md")
    args = parser.parse_args(argv)
    if args.max_batches < 2:
        parser.error("--max-batches must be >= 2 (one model step is a warm-up)")
    workers = (os.cpu_count() or 1) if args.workers is None else args.workers
    if workers < 0 or args.max_batches < workers + 2:
        parser.error(f"--max-batches must be >= workers + 2 = {workers + 2} (the first batch per worker is not timed)")
    chosen = {}
    for item in args.recipe:
        dataset, sep, recipe = item.partition("=")
        if not sep:
            parser.error(f"--recipe {item!r}: expected DATASET=RECIPE")
        chosen[dataset] = recipe

    import torch

    from polyfuse.data.datasets import dataset_names, describe_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    warn_if_busy()
    names = args.datasets or dataset_names()
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for name in names:
        try:
            info = describe_dataset(name)
        except Exception as exc:  # unknown name
            skipped.append({"dataset": name, "reason": str(exc)})
            continue
        if not info.get("installed", True) or info.get("error"):
            reason = info.get("error") or "not installed: " + "; ".join(info.get("install") or [])
            skipped.append({"dataset": name, "reason": reason})
            print(f"{name}: skipped ({reason})", file=sys.stderr)
            continue
        print(f"{name}: ...", file=sys.stderr)
        try:
            result = bench_one(name, args, chosen)
        except Exception as exc:  # a missing font / package / file shows up here too
            reason = f"{type(exc).__name__}: {exc}"
            skipped.append({"dataset": name, "reason": reason})
            print(f"{name}: skipped ({reason})", file=sys.stderr)
            if os.environ.get("BENCH_DEBUG"):
                traceback.print_exc()
            continue
        results.append(result)
        print(
            f"{name}: loader cold {result['loader_cold']['samples_per_s']:.0f}/s ({workers} workers), "
            f"{result['loader_cold_0_workers']['samples_per_s']:.0f}/s (0 workers), warm "
            f"{result['loader_warm']['samples_per_s']:.0f}/s, model {result['model']['samples_per_s']:.0f}/s",
            file=sys.stderr,
        )

    lines = [
        "## Data loader vs model training throughput (samples/s)\n",
        f"Up to {args.max_batches} batches per pass, median of {args.repeats} alternating repeats of every pass, "
        f"torch threads {torch.get_num_threads()}, {os.cpu_count()} cores; "
        f"cold = row cache off (rows decoded from files), warm = cached rows, both with {workers} DataLoader workers "
        "(steady state: the first batch per worker, made while the workers start, is not in the rate; "
        "'first batch' is the time to it); cold, 0 workers = the same pass in the main process; "
        "model = forward + backward + AdamW on the warm batches. "
        f"Target: loader / model >= {TARGET:g} (cold and warm, with {workers} workers).\n",
        f"| dataset | recipe | inputs | batch | rows | loader cold ({workers} workers) | first batch s | "
        "loader cold (0 workers) | loader warm | model | cold / model | cold / model per repeat | "
        "cold (0 workers) / model | warm / model | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ok = r["ratio_cold"] >= TARGET and r["ratio_warm"] >= TARGET
        model_note = " (stand-in loss)" if r["model"]["stand_in_loss"] else ""
        inputs = ", ".join(f"{n}:{k}" for n, k in r["inputs"].items())
        lines.append(
            f"| {r['dataset']} | {r['recipe']}{model_note} | {inputs} | {r['batch_size']} | {r['train_rows']} | "
            f"{r['loader_cold']['samples_per_s']:.0f} | {r['loader_cold']['first_batch_s']:.2f} | "
            f"{r['loader_cold_0_workers']['samples_per_s']:.0f} | {r['loader_warm']['samples_per_s']:.0f} | "
            f"{r['model']['samples_per_s']:.0f} | {r['ratio_cold']:.2f} | "
            f"{', '.join(f'{x:.2f}' for x in r['ratio_cold_per_repeat'])} | {r['ratio_cold_0_workers']:.2f} | "
            f"{r['ratio_warm']:.2f} | {'PASS' if ok else 'FAIL'} |"
        )
    if skipped:
        lines += ["", "Skipped:", ""] + [f"- {s['dataset']}: {s['reason']}" for s in skipped]
    lines.append("")
    markdown = "\n".join(lines)
    print(markdown)
    report = {
        "benchmark": "loader",
        "max_batches": args.max_batches,
        "max_rows": args.max_rows,
        "threads": torch.get_num_threads(),
        "workers": workers,
        "repeats": args.repeats,
        "target": TARGET,
        "results": results,
        "skipped": skipped,
        "machine": machine_info(),
    }
    write_results(args.out, markdown, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
