"""Magnitude pruning of Linear/Conv weights (``torch.nn.utils.prune``), optional mask-keeping fine-tuning.

Unstructured: ``global_unstructured`` with L1 magnitude over every Linear/Conv weight of the
encoders, fusion and heads, so ``sparsity`` is the fraction of those weights set to zero.
Structured (``ln_structured``, L2 norm): whole output units of Linear layers and output
channels of convolutions, layer by layer; the layers that produce a task's outputs are left
whole (pruning them would delete classes). Fine-tuning keeps torch's pruning masks in place, so
pruned weights stay exactly zero; the masks are made permanent before saving.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn
from torch.nn.utils import prune

from polyfuse.errors import ConfigError

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
REPORT_FILE = "prune_report.json"


def prunable_layers(model: nn.Module, *, structured: bool = False) -> list[tuple[str, nn.Module]]:
    """Linear/Conv layers of the prediction path (objectives excluded); ``structured`` also leaves
    out the last layer of every head (its output units are the task's classes / targets)."""
    skip_prefixes = ("objectives.",)
    last_of_head: set[str] = set()
    if structured and hasattr(model, "heads"):
        for head_name, head in model.heads.items():
            layers = [n for n, m in head.named_modules() if isinstance(m, PRUNABLE)]
            if layers:
                last_of_head.add(f"heads.{head_name}.{layers[-1]}")
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, PRUNABLE) or name.startswith(skip_prefixes) or name in last_of_head:
            continue
        if isinstance(getattr(module, "weight", None), torch.Tensor) and module.weight.numel():
            out.append((name, module))
    return out


def sparsity(model: nn.Module, layers: Iterable[tuple[str, nn.Module]] | None = None) -> float:
    """Fraction of exact zeros among the weights of ``layers`` (default: every prunable layer)."""
    layers = list(layers) if layers is not None else prunable_layers(model)
    total = zeros = 0
    for _, module in layers:
        weight = module.weight.detach()
        total += weight.numel()
        zeros += int((weight == 0).sum())
    return zeros / total if total else 0.0


def apply_masks(model: nn.Module, amount: float, *, structured: bool = False) -> list[tuple[str, nn.Module]]:
    """Attach pruning masks (weights become ``weight_orig * weight_mask``); returns the pruned layers."""
    if not 0.0 <= amount < 1.0:
        raise ConfigError(f"sparsity: expected a fraction in [0, 1), got {amount!r}")
    layers = prunable_layers(model, structured=structured)
    if not layers:
        raise ConfigError("sparsity: the model has no Linear/Conv layer to prune")
    if structured:
        for _, module in layers:
            if module.weight.shape[0] > 1:
                prune.ln_structured(module, "weight", amount=amount, n=2, dim=0)
            else:
                prune.identity(module, "weight")
    else:
        prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured, amount=amount)
    return layers


def make_permanent(layers: Iterable[tuple[str, nn.Module]]) -> None:
    """Fold masks into the weights (``prune.remove``): plain parameters again, zeros kept."""
    for _, module in layers:
        if prune.is_pruned(module):
            prune.remove(module, "weight")


def prune_model(model: nn.Module, amount: float, *, structured: bool = False) -> float:
    """Prune ``model`` in place and make it permanent; returns the achieved sparsity of the pruned layers."""
    layers = apply_masks(model, amount, structured=structured)
    make_permanent(layers)
    return sparsity(model, layers)


def finetune(model: nn.Module, config: Any, pipeline: Any, epochs: int) -> dict[str, Any]:
    """Train the (masked) model for ``epochs`` on its training split with polyfuse's Lightning module.

    The pruning masks are still attached, so gradients never revive a pruned weight.
    """
    import lightning as L

    from polyfuse.build import objective_weights
    from polyfuse.data.collate import Collator
    from polyfuse.data.prepare import prepare_data
    from polyfuse.train.datamodule import MultimodalDataModule
    from polyfuse.train.module import MultimodalLightningModule
    from polyfuse.train.runner import _quiet_lightning

    _quiet_lightning()
    config = config.copy()
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    prepared = prepare_data(config, pipeline=pipeline, splits=("train",), progress=False)
    module = MultimodalLightningModule(
        model, config.tasks, pipeline.task_dims(), config.train, objective_weights(config)
    )
    datamodule = MultimodalDataModule(prepared.datasets, Collator(pipeline), config.data, config.train.seed)
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        gradient_clip_val=config.train.grad_clip, deterministic=config.train.deterministic,
    )
    started = time.perf_counter()
    model.train()  # a loaded model is in eval mode; Lightning keeps modules' modes as it finds them
    trainer.fit(module, datamodule=datamodule)
    model.eval()
    return {"epochs": epochs, "rows": len(prepared.datasets["train"]), "seconds": round(time.perf_counter() - started, 2)}


def prune_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    *,
    amount: float = 0.5,
    structured: bool = False,
    finetune_epochs: int = 0,
    data: str | Path | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """``polyfuse prune``: prune, optionally fine-tune, score before/after on the test split, and save
    a normal checkpoint directory in ``out`` (``polyfuse.load(out)`` works) with ``prune_report.json``."""
    from polyfuse.checkpoint import save_model_dir
    from polyfuse.deploy.rows import batches, checkpoint_rows, main_metric, score, torch_predict_fn
    from polyfuse.errors import PolyfuseError
    from polyfuse.predictor import Predictor

    ckpt, out = Path(ckpt), Path(out)
    if out.resolve() == ckpt.resolve():
        raise PolyfuseError("--out must be another folder than the checkpoint")
    if finetune_epochs < 0:
        raise ConfigError(f"finetune_epochs: expected 0 or more, got {finetune_epochs}")
    predictor = Predictor.load(ckpt)
    model, config, pipeline = predictor.model, predictor.config, predictor.pipeline
    tasks = {name: task.type for name, task in config.tasks.items()}
    rows = checkpoint_rows(config, pipeline, data)
    encoded = list(batches(pipeline, rows, batch_size))
    before = score(torch_predict_fn(model, tasks), encoded, tasks)

    layers = apply_masks(model, amount, structured=structured)
    pruned_sparsity = sparsity(model, layers)
    after_pruning = score(torch_predict_fn(model, tasks), encoded, tasks)
    tuning = finetune(model, config, pipeline, finetune_epochs) if finetune_epochs > 0 else None
    make_permanent(layers)
    final_sparsity = sparsity(model, layers)
    after = score(torch_predict_fn(model, tasks), encoded, tasks) if tuning else after_pruning

    weights = sum(m.weight.numel() for _, m in layers)
    report: dict[str, Any] = {
        "checkpoint": str(ckpt), "out": str(out), "method": "ln_structured (L2, output units)" if structured else "global_unstructured (L1)",
        "target_sparsity": amount, "sparsity": final_sparsity, "sparsity_after_pruning": pruned_sparsity,
        "pruned_layers": len(layers), "pruned_weights": int(weights), "rows": int(sum(len(b["row"]) for b in encoded)),
        "data": rows.source, "metrics": {"before": before, "after_pruning": after_pruning, "after": after},
        "finetune": tuning,
    }
    main = main_metric(before, tasks)
    if main is not None:
        task, metric = main[0].split("/")
        report["metric"] = main[0]
        report["main"] = {k: v.get(task, {}).get(metric) for k, v in report["metrics"].items()}
    metrics = {"name": config.name, "pruned_from": str(ckpt), "test": after, "pruning": {k: report[k] for k in ("method", "target_sparsity", "sparsity")}}
    save_model_dir(out, model, config, predictor.specs, predictor.task_dims, pipeline, metrics)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2, default=float))
    return report
