"""Training overhead: polyfuse's trainer (``polyfuse.fit``) vs a minimal hand-written PyTorch loop.

Usage::

    python benchmarks/bench_train_overhead.py                        # avmnist-fused, 4 epochs, 3 repeats
    python benchmarks/bench_train_overhead.py --epochs 3 --repeats 2 --threads 1  # quick check
    python benchmarks/bench_train_overhead.py --recipe avmnist-hard-fused -o data.batch_size=32

Both sides train the same model (``build_model`` on the same prepared data, same seed), with the
same batch size, AdamW parameter groups, learning-rate schedule, gradient clipping and number of
epochs, and run a forward-only pass over the valid split after every training epoch (as Lightning
does). The polyfuse side is the real user entry point, ``polyfuse.fit``; an epoch timer is added
to its callbacks from outside (epoch k = from epoch k's start to epoch k+1's start, or to the end
of training: training steps, validation with metrics, logging and the per-epoch checkpoints). The
plain side times the same span of its own loop. Epoch 1 of both is left out (first-call costs; the
datasets' row cache is filled by ``prepare_data`` before either side starts, so every timed epoch
reads cached rows). A third side, Lightning alone (the plain loop's model and losses in a bare LightningModule and
Trainer), measures the floor under any Lightning trainer. The sides alternate in every repeat (each
goes first in turn), and the reported ratio is median(polyfuse s/epoch) / median(plain s/epoch) over epochs 2..N
of all repeats. Absolute times depend on the machine; the ratio is measured within one run.

Prints a markdown table and writes it with the full JSON to ``--out`` (default
``benchmarks/results/bench_train_overhead.md`` and ``.json``). Target: ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from _common import machine_info, warn_if_busy, write_results  # benchmarks/_common.py

TARGET = 1.05


def to_device(batch: Any, device: Any) -> Any:
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def sync(device: Any) -> None:
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        torch.cuda.synchronize(device)


def plain_device(config: Any) -> Any:
    """The device Lightning's ``accelerator`` would pick, so that both sides run on the same one."""
    import torch

    acc = str(config.train.accelerator)
    if acc in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def task_loss(task: Any, pred: Any, target: Any) -> Any:
    """The default loss of each task type, written plainly (polyfuse's objectives mask missing labels the same way)."""
    import torch
    import torch.nn.functional as F

    if task.type == "classification":
        return F.cross_entropy(pred.float(), target.long(), ignore_index=-100, label_smoothing=task.label_smoothing)
    if task.type == "regression":
        pred = pred.float().squeeze(-1) if pred.shape[-1] == 1 and target.dim() == 1 else pred.float()
        keep = ~torch.isnan(target)
        return F.mse_loss(pred[keep], target[keep].to(pred.dtype))
    if task.type == "multilabel":
        keep = ~torch.isnan(target) & (target >= 0)
        return F.binary_cross_entropy_with_logits(pred.float()[keep], target[keep].float())
    raise SystemExit(f"the plain loop supports classification / regression / multilabel tasks, not {task.type!r}")


def plain_loaders(prepared: Any, seed: int) -> tuple[Any, Any, Any]:
    """(train dataset, shuffled train loader, valid loader or None): plain DataLoaders over the prepared rows."""
    import torch
    from torch.utils.data import DataLoader

    from polyfuse.data.collate import Collator

    config = prepared.config
    collate = Collator(prepared.pipeline)
    train_ds, valid_ds = prepared.datasets["train"], prepared.datasets.get("valid")
    loader = DataLoader(
        train_ds, batch_size=config.data.batch_size, shuffle=True, collate_fn=collate,
        num_workers=config.data.num_workers, generator=torch.Generator().manual_seed(seed),
    )
    eval_bs = config.data.eval_batch_size or config.data.batch_size
    valid_loader = (
        DataLoader(valid_ds, batch_size=eval_bs, shuffle=False, collate_fn=collate, num_workers=config.data.num_workers)
        if valid_ds is not None and len(valid_ds) else None
    )
    return train_ds, loader, valid_loader


def plain_run(prepared: Any, epochs: int, seed: int, threads: int | None) -> dict[str, Any]:
    """A minimal PyTorch loop on the prepared data; per-epoch seconds (train epoch + valid pass) and valid accuracy."""
    import lightning as L
    import torch

    from polyfuse.build import build_model
    from polyfuse.train.init import parameter_groups
    from polyfuse.train.module import lr_lambda

    config, pipeline = prepared.config, prepared.pipeline
    cfg = config.train
    if config.objectives:
        raise SystemExit(f"recipe {config.name}: the plain loop does not implement pretraining objectives")
    if cfg.accumulate != 1 or cfg.precision != "32" or cfg.freeze_epochs or cfg.layerwise_lr_decay not in (None, 1.0):
        raise SystemExit("the plain loop implements train.accumulate=1, precision 32, no freeze / layer-wise decay only")
    if threads:
        torch.set_num_threads(threads)
    L.seed_everything(seed, workers=True, verbose=False)
    device = plain_device(config)
    model = build_model(config, pipeline.specs(), pipeline.task_dims()).to(device)
    train_ds, loader, valid_loader = plain_loaders(prepared, seed)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay, cfg.lr), lr=cfg.lr)
    total = epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.schedule, int(cfg.warmup * total), total))
    tasks = config.tasks
    first = next(iter(tasks))
    seconds: list[float] = []
    cpu: list[float] = []
    accs: list[float | None] = []
    for epoch in range(epochs):
        sync(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        train_ds.set_epoch(epoch)  # the augmentation stream of this epoch (Lightning's sampler does the same)
        model.train()
        for batch in loader:
            batch = to_device(batch, device)
            out = model(batch["inputs"], batch["present"], targets=batch["labels"])
            loss = sum(t.weight * task_loss(t, out.outputs[n], batch["labels"][n]) for n, t in tasks.items())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
        acc = None
        if valid_loader is not None:
            model.eval()
            correct = count = 0
            with torch.inference_mode():
                for batch in valid_loader:
                    batch = to_device(batch, device)
                    out = model(batch["inputs"], batch["present"], targets=batch["labels"])
                    if tasks[first].type == "classification":
                        target = batch["labels"][first]
                        keep = target != -100
                        correct += int((out.outputs[first].argmax(-1)[keep] == target[keep]).sum())
                        count += int(keep.sum())
            acc = correct / count if count else None
        sync(device)
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        accs.append(acc)
    return {"epoch_seconds": seconds, "epoch_cpu_seconds": cpu, "train_seconds": sum(seconds), "valid_acc": accs}


def lightning_run(prepared: Any, epochs: int, seed: int, threads: int | None) -> dict[str, Any]:
    """Lightning alone: the plain loop's model, losses, loaders and optimizer in a bare LightningModule and
    Trainer (no logging, loggers, checkpoints or callbacks but the epoch timer): the floor under polyfuse."""
    import lightning as L
    import torch

    from polyfuse.build import build_model
    from polyfuse.train.init import parameter_groups
    from polyfuse.train.module import lr_lambda

    config, pipeline = prepared.config, prepared.pipeline
    cfg, tasks = config.train, config.tasks
    if threads:
        torch.set_num_threads(threads)
    L.seed_everything(seed, workers=True, verbose=False)
    _, loader, valid_loader = plain_loaders(prepared, seed)
    total = epochs * len(loader)

    class Bare(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = build_model(config, pipeline.specs(), pipeline.task_dims())

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            out = self.model(batch["inputs"], batch["present"], targets=batch["labels"])
            return sum(t.weight * task_loss(t, out.outputs[n], batch["labels"][n]) for n, t in tasks.items())

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.model(batch["inputs"], batch["present"], targets=batch["labels"])

        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.AdamW(parameter_groups(self.model, cfg.weight_decay, cfg.lr), lr=cfg.lr)
            schedule = lr_lambda(cfg.schedule, int(cfg.warmup * total), total)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    timer = epoch_timer()
    trainer = L.Trainer(
        max_epochs=epochs, accelerator=cfg.accelerator, devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer],
        gradient_clip_val=cfg.grad_clip or None,
    )
    started = time.perf_counter()
    trainer.fit(Bare(), loader, valid_loader)
    return {
        "epoch_seconds": timer.epoch_seconds(0), "epoch_cpu_seconds": timer.epoch_seconds(1),
        "train_seconds": time.perf_counter() - started, "valid_acc": [None] * epochs,
    }


def epoch_timer() -> Any:
    """A Lightning callback noting (wall, process CPU) time at every train epoch start and at the end of training."""
    import lightning as L

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.marks: list[tuple[float, float]] = []  # (wall, process CPU)
            self.end: tuple[float, float] | None = None

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            sync(pl_module.device)
            self.marks.append((time.perf_counter(), time.process_time()))

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            sync(pl_module.device)
            self.end = (time.perf_counter(), time.process_time())

        def epoch_seconds(self, which: int = 0) -> list[float]:
            marks = self.marks + ([self.end] if self.end is not None else [])
            return [b[which] - a[which] for a, b in zip(marks, marks[1:])]

    return EpochTimer()


def polyfuse_run(config: Any, epochs: int, task: str | None, keep: Path | None) -> dict[str, Any]:
    """``polyfuse.fit`` with an epoch timer added to the trainer's callbacks (wrapping the runner's progress hook)."""
    import polyfuse
    import polyfuse.train.runner as runner

    timer = epoch_timer()
    original = runner._progress_callbacks
    runner._progress_callbacks = lambda show: [*original(show), timer]
    try:
        with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
            out = keep or Path(tmp) / "run"
            started = time.perf_counter()
            result = polyfuse.fit(config, out=out, overwrite=True, progress=False)
            fit_seconds = time.perf_counter() - started
            history = json.loads((Path(out) / "history.json").read_text())
    finally:
        runner._progress_callbacks = original
    epoch_seconds, epoch_cpu = timer.epoch_seconds(0), timer.epoch_seconds(1)
    if len(epoch_seconds) != epochs:  # the runner changed: fall back to the mean over trainer.fit
        print("warning: epoch timer not called; using train_seconds / epochs", file=sys.stderr)
        epoch_seconds = [result.metrics["train_seconds"] / max(1, epochs)] * epochs
        epoch_cpu = [float("nan")] * epochs
    key = f"valid/{task}/acc"
    return {
        "epoch_seconds": epoch_seconds,
        "epoch_cpu_seconds": epoch_cpu,
        "train_seconds": float(result.metrics["train_seconds"]),  # trainer.fit, as metrics.json reports it
        "fit_seconds": fit_seconds,  # the whole polyfuse.fit call: data, training, evaluation, saving
        "valid_acc": [row.get(key) for row in history],
        "epochs_run": result.metrics.get("epochs_run"),
    }


def fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="avmnist-fused", help="recipe name or YAML path")
    parser.add_argument("-o", "--override", action="append", default=[], help="dotted override, e.g. data.batch_size=32")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (epochs 2..N are timed)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, interleaved")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (both sides)")
    parser.add_argument("--keep-run", type=Path, default=None, help="keep polyfuse's run directory here")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_train_overhead.md")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (epoch 1 is not timed)")

    import torch

    import polyfuse  # noqa: F401
    from polyfuse.data.prepare import prepare_data
    from polyfuse.errors import PolyfuseError
    from polyfuse.recipes import load_recipe

    overrides = [*args.override, f"train.epochs={args.epochs}", "train.progress=false"]
    if args.threads:
        overrides.append(f"train.threads={args.threads}")
    try:
        config = load_recipe(args.recipe, overrides)
        if config.train.max_steps not in (None, -1) or config.train.early_stopping.patience is not None:
            config = config.with_overrides(["train.max_steps=-1", "train.early_stopping.patience=null"])
        prepared = prepare_data(config, progress=False)
    except PolyfuseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    warn_if_busy()
    seed = config.train.seed
    task = next(iter(prepared.config.tasks), None)  # the built-in dataset's tasks are filled in by prepare_data
    runs: dict[str, list[dict[str, Any]]] = {"polyfuse": [], "plain": [], "lightning": []}
    sides = list(runs)
    for r in range(args.repeats):
        order = sides[r % 3:] + sides[:r % 3]  # each side goes first in turn
        for side in order:
            print(f"repeat {r + 1}/{args.repeats}: {side}", file=sys.stderr)
            if side == "polyfuse":
                runs[side].append(polyfuse_run(config, args.epochs, task, args.keep_run))
            elif side == "lightning":
                runs[side].append(lightning_run(prepared, args.epochs, seed, args.threads))
            else:
                runs[side].append(plain_run(prepared, args.epochs, seed, args.threads))
            print(f"  s/epoch {[round(s, 3) for s in runs[side][-1]['epoch_seconds']]}", file=sys.stderr)

    def summary(side: str) -> dict[str, Any]:
        timed = [s for run in runs[side] for s in run["epoch_seconds"][1:]]
        cpu = [s for run in runs[side] for s in run["epoch_cpu_seconds"][1:]]
        return {
            "median_epoch_s": statistics.median(timed),
            "median_epoch_cpu_s": statistics.median(cpu),
            "min_epoch_s": min(timed),
            "first_epoch_s": statistics.median(run["epoch_seconds"][0] for run in runs[side]),
            "train_s": statistics.median(run["train_seconds"] for run in runs[side]),
            "final_valid_acc": [run["valid_acc"][-1] for run in runs[side]],
        }

    stats = {side: summary(side) for side in runs}
    ratio = stats["polyfuse"]["median_epoch_s"] / stats["plain"]["median_epoch_s"]
    floor = stats["lightning"]["median_epoch_s"] / stats["plain"]["median_epoch_s"]
    own = stats["polyfuse"]["median_epoch_s"] / stats["lightning"]["median_epoch_s"]
    cpu_ratio = stats["polyfuse"]["median_epoch_cpu_s"] / stats["plain"]["median_epoch_cpu_s"]
    per_repeat = [
        statistics.median(p["epoch_seconds"][1:]) / statistics.median(q["epoch_seconds"][1:])
        for p, q in zip(runs["polyfuse"], runs["plain"])
    ]
    fit_s = statistics.median(run["fit_seconds"] for run in runs["polyfuse"])
    n_train = len(prepared.datasets["train"])
    steps = -(-n_train // config.data.batch_size)
    lines = [
        f"## Training overhead: {config.name} (polyfuse.fit vs plain PyTorch loop)\n",
        f"{n_train} train rows, batch {config.data.batch_size} ({steps} steps/epoch), {args.epochs} epochs x "
        f"{args.repeats} repeats, torch threads {torch.get_num_threads()}, device {plain_device(config)}; "
        "s/epoch = train epoch + valid pass (+ polyfuse's logging and checkpoints), median over epochs 2..N.\n",
        "| trainer | s/epoch (median) | s/epoch (min) | CPU s/epoch (median) | epoch 1 s | train s (all epochs) | final valid acc |",
        "|---|---|---|---|---|---|---|",
    ]
    labels = (
        ("polyfuse", "polyfuse.fit (Lightning)"), ("lightning", "Lightning alone (bare module and Trainer)"),
        ("plain", "plain PyTorch loop"),
    )
    for side, label in labels:
        s = stats[side]
        accs = ", ".join(fmt(a) for a in s["final_valid_acc"]) if any(a is not None for a in s["final_valid_acc"]) else "-"
        lines.append(
            f"| {label} | {s['median_epoch_s']:.3f} | {s['min_epoch_s']:.3f} | {s['median_epoch_cpu_s']:.3f} | "
            f"{s['first_epoch_s']:.3f} | "
            f"{s['train_s']:.2f} | {accs} |"
        )
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    lines += [
        "",
        f"**ratio polyfuse / plain (s/epoch): {ratio:.3f}** (target <= {TARGET:.2f}: {verdict}); "
        f"per repeat: {', '.join(f'{x:.3f}' for x in per_repeat)}; "
        f"process CPU time ratio: {cpu_ratio:.3f} (less sensitive to other load on a shared machine)",
        "",
        f"Of that, Lightning alone / plain: {floor:.3f} (the floor any Lightning trainer starts from); "
        f"polyfuse.fit / Lightning alone: {own:.3f} (polyfuse's own logging, metrics, checkpoints and loaders).",
        "",
        f"Whole `polyfuse.fit` call (data preparation, training, test evaluation, saving): {fit_s:.2f} s median.",
        "",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    report = {
        "benchmark": "train_overhead",
        "recipe": args.recipe,
        "overrides": overrides,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "device": str(plain_device(config)),
        "train_rows": n_train,
        "batch_size": config.data.batch_size,
        "steps_per_epoch": steps,
        "ratio": ratio,
        "ratio_per_repeat": per_repeat,
        "lightning_alone_ratio": floor,
        "polyfuse_over_lightning_ratio": own,
        "cpu_ratio": cpu_ratio,
        "target": TARGET,
        "pass": ratio <= TARGET,
        "summary": stats,
        "fit_seconds_median": fit_s,
        "runs": runs,
        "machine": machine_info(),
    }
    write_results(args.out, markdown, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
