"""int8 quantization (PyTorch and ONNX Runtime) and magnitude pruning of a trained AV-MNIST model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import polyfuse
from polyfuse.build import build_encoder, build_fusion, build_head
from polyfuse.cli import app
from polyfuse.config import ComponentConfig, ConfigError
from polyfuse.deploy.onnx_predictor import OnnxPredictor
from polyfuse.deploy.prune import apply_masks, make_permanent, prunable_layers, prune_model, sparsity
from polyfuse.deploy.quantize import quantize_torch
from polyfuse.model import MultimodalModel
from polyfuse.registry import DATASETS
from component_fixtures import example_spec

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

runner = CliRunner()


def invoke_json(args: list[str]) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])


def small_model() -> MultimodalModel:
    specs = {"image": example_spec("image"), "tab": example_spec("tabular", "tab")}
    torch.manual_seed(0)
    encoders = {
        "image": build_encoder(specs["image"], ComponentConfig("cnn", {"channels": [8, 16]}), 16),
        "tab": build_encoder(specs["tab"], ComponentConfig("tabular_mlp"), 16),
    }
    fusion = build_fusion(ComponentConfig("concat"), {k: e.output_dim for k, e in encoders.items()}, 16)
    return MultimodalModel(encoders, fusion, {"y": build_head("classification", {"hidden": 8}, fusion.output_dim, 3)})


# ----------------------------------------------------------------------------- quantization


def test_torch_dynamic_quantization_replaces_linear_layers() -> None:
    model = small_model().eval()
    quantized = quantize_torch(model)
    kinds = {type(m).__module__ for m in quantized.modules()}
    assert "torch.ao.nn.quantized.dynamic.modules.linear" in kinds
    assert not any(type(m) is nn.Linear for m in quantized.modules())
    assert any(type(m) is nn.Linear for m in model.modules())  # the original is untouched


def test_quantize_reports_sizes_and_metrics(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    report = invoke_json(["quantize", str(run), "--out", str(out)])
    assert report["rows"] == 96 and report["metric"] == "digit/acc"
    for backend in ("torch", "onnx"):
        fp32, int8 = report[backend]["fp32"], report[backend]["int8"]
        assert fp32["bytes"] > 0 and int8["bytes"] > 0
        assert 0.0 <= int8["main"] <= 1.0 and 0.0 <= fp32["main"] <= 1.0
        assert abs(int8["main"] - fp32["main"]) <= 0.1  # int8 barely changes a tiny model's accuracy
        assert set(int8["metrics"]["digit"]) >= {"acc", "f1"}
    assert report["onnx"]["int8"]["bytes"] < report["onnx"]["fp32"]["bytes"] and report["onnx"]["compression"] > 1
    assert report["torch"]["int8"]["bytes"] < report["torch"]["fp32"]["bytes"]
    # fp32 ONNX scores exactly like eager PyTorch (same rows, same predictions)
    assert report["onnx"]["fp32"]["metrics"]["digit"]["acc"] == pytest.approx(report["torch"]["fp32"]["metrics"]["digit"]["acc"])
    assert json.loads((out / "quantize_report.json").read_text())["metric"] == "digit/acc"
    import polyfuse.data  # noqa: F401

    avmnist = DATASETS.get("avmnist").factory()
    rows = pd.read_csv(avmnist.test).head(8)
    int8 = OnnxPredictor(out, onnx_file="model.int8.onnx").predict(rows, root=avmnist.root)
    fp32 = OnnxPredictor(out).predict(rows, root=avmnist.root)
    probs = [c for c in fp32.columns if c.startswith("digit:p:")]
    np.testing.assert_allclose(int8[probs].sum(axis=1), 1.0, atol=1e-4)
    assert np.abs(int8[probs].to_numpy(float) - fp32[probs].to_numpy(float)).max() < 0.1


# ----------------------------------------------------------------------------- pruning


def test_global_pruning_hits_the_target_and_structured_zeroes_whole_units() -> None:
    model = small_model()
    achieved = prune_model(model, 0.5)
    assert achieved == pytest.approx(0.5, abs=0.01)
    assert not any(hasattr(m, "weight_orig") for m in model.modules())  # made permanent

    model = small_model()
    layers = prunable_layers(model, structured=True)
    head_last = [n for n, m in model.heads["y"].named_modules() if isinstance(m, nn.Linear)][-1]
    assert f"heads.y.{head_last}" not in {n for n, _ in layers}  # class outputs are never pruned away
    achieved = prune_model(model, 0.5, structured=True)
    for _, module in layers:
        rows = module.weight.detach().reshape(module.weight.shape[0], -1)
        dead = int((rows.abs().sum(dim=1) == 0).sum())
        assert dead == round(0.5 * rows.shape[0]) or rows.shape[0] == 1
    assert achieved == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ConfigError, match="sparsity"):
        apply_masks(small_model(), 1.5)


def test_masks_keep_pruned_weights_at_zero_while_training() -> None:
    model = small_model().train()
    layers = apply_masks(model, 0.6)
    zeros = {name: (m.weight == 0).clone() for name, m in layers}
    before = {name: m.weight.detach().clone() for name, m in layers}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    from component_fixtures import random_inputs

    specs = {"image": example_spec("image"), "tab": example_spec("tabular", "tab")}
    for step in range(3):
        inputs = {n: random_inputs(s, 4, seed=step) for n, s in specs.items()}
        present = {n: torch.ones(4, dtype=torch.bool) for n in specs}
        loss = model(inputs, present).outputs["y"].logsumexp(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    make_permanent(layers)
    for name, module in layers:
        assert bool((module.weight[zeros[name]] == 0).all()), name
        assert not torch.equal(module.weight.detach(), before[name]), name  # the rest did train
    assert sparsity(model, layers) == pytest.approx(0.6, abs=0.01)


def test_prune_cli_with_finetuning_saves_a_loadable_checkpoint(run: Path, tmp_path: Path) -> None:
    plain = invoke_json(["prune", str(run), "--sparsity", "0.5", "--out", str(tmp_path / "plain")])
    tuned = invoke_json(["prune", str(run), "--sparsity", "0.5", "--finetune-epochs", "1", "--out", str(tmp_path / "tuned")])
    for report in (plain, tuned):
        assert report["sparsity"] == pytest.approx(0.5, abs=0.01)
        assert report["metric"] == "digit/acc" and 0.0 <= report["main"]["after"] <= 1.0
        assert report["rows"] == 96 and report["pruned_layers"] > 0
    assert tuned["finetune"]["epochs"] == 1 and plain["finetune"] is None

    plain_model = polyfuse.load(tmp_path / "plain").model
    tuned_model = polyfuse.load(tmp_path / "tuned").model
    assert sparsity(tuned_model) >= 0.5 - 0.01
    changed = False
    for (name, a), (_, b) in zip(prunable_layers(plain_model), prunable_layers(tuned_model)):
        pruned = a.weight == 0  # the same mask (same weights, same global threshold)
        assert bool((b.weight[pruned] == 0).all()), f"{name}: fine-tuning revived pruned weights"
        changed = changed or not torch.equal(a.weight, b.weight)
    assert changed  # fine-tuning did update the surviving weights
    assert json.loads((tmp_path / "tuned" / "prune_report.json").read_text())["finetune"]["epochs"] == 1
