"""Pretrain -> fine-tune: init_from a contrastive run, encoders frozen for the first epochs, layer-wise lr decay."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from polyfuse.build import build_model, validate_config
from polyfuse.config import Config, ConfigError
from component_fixtures import example_spec, random_inputs
from polyfuse.train.init import FreezeSchedule, block_key, encoder_depths, load_matching_weights, lr_scales, parameter_groups

TINY = ["data.max_rows=48", "data.batch_size=16", "model.dim=16", "train.progress=false"]


def _model(encoders: dict | None = None) -> torch.nn.Module:
    config = Config.from_dict(
        {
            "data": {"train": "x.csv"},
            "model": {"dim": 16, "encoders": encoders or {"text": {"name": "text_transformer", "depth": 2}, "image": "lenet"}},
            "tasks": {"y": {"column": "y"}},
        }
    )
    image = example_spec("image")
    image.channels, image.height, image.width = 1, 28, 28
    return build_model(config, {"text": example_spec("text"), "image": image}, {"y": 3})


# --------------------------------------------------------------------------- layer-wise decay


def test_blocks_follow_the_data_flow_and_lr_decays_with_depth() -> None:
    model = _model()
    assert block_key("encoder.blocks.3.attn.q_proj.weight") == "encoder.blocks.3" and block_key("proj.weight") == "proj"
    inputs = {"text": random_inputs(example_spec("text"), 2), "image": {"pixels": torch.randn(2, 1, 28, 28)}}
    depths = encoder_depths(model, inputs)
    image = {block_key(n.split(".", 2)[2]): d for n, d in depths.items() if n.startswith("encoders.image.")}
    # LeNet registers its fully connected weight first, but it comes after the convolutions
    assert image["features.0"][0] < image["features.3"][0] < image["fc1_weight"][0] < image["head.2"][0]
    text = {block_key(n.split(".", 2)[2]): d for n, d in depths.items() if n.startswith("encoders.text.")}
    assert text["embed"][0] < text["encoder.blocks.0"][0] < text["encoder.blocks.1"][0]

    scales = lr_scales(model, 0.5, inputs)
    assert scales["encoders.text.encoder.blocks.1.attn.q_proj.weight"] == pytest.approx(
        2 * scales["encoders.text.encoder.blocks.0.attn.q_proj.weight"]
    )
    top = max(v for k, v in scales.items() if k.startswith("encoders.image."))
    assert top == 1.0 and scales["encoders.image.features.0.weight"] == pytest.approx(0.5**4)
    assert all(v == 1.0 for k, v in scales.items() if not k.startswith("encoders."))  # fusion, heads
    assert set(lr_scales(model, None).values()) == {1.0}

    groups = parameter_groups(model, 0.01, 1e-3, 0.5, inputs)
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len(list(model.parameters())) == len({id(p) for p in grouped})
    for group in groups:
        assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"])
        if any(p.dim() < 2 for p in group["params"]):  # biases and norms: no weight decay
            assert group["weight_decay"] == 0.0


def test_freeze_schedule_freezes_encoders_then_releases_them() -> None:
    model = _model()
    model.encoders["text"].embed.weight.requires_grad_(False)  # frozen for good (e.g. by `freeze:`)
    schedule = FreezeSchedule(model, epochs=2)
    assert schedule.apply(0) and schedule.apply(1)
    assert not any(p.requires_grad for p in model.encoders.parameters())
    assert not any(m.training for m in model.encoders.modules())
    assert all(p.requires_grad for p in model.heads.parameters())
    assert not schedule.apply(2)
    assert all(p.requires_grad for n, p in model.encoders.named_parameters() if n != "text.embed.weight")
    assert not model.encoders["text"].embed.weight.requires_grad
    assert all(m.training for m in model.encoders.modules())


def test_finetune_options_are_checked() -> None:
    base = {"data": {"dataset": "avmnist"}}
    with pytest.raises(ConfigError, match="train.freeze_epochs"):
        validate_config(Config.from_dict({**base, "train": {"freeze_epochs": -1}}))
    with pytest.raises(ConfigError, match=r"train.layerwise_lr_decay: must be in \(0, 1\]"):
        validate_config(Config.from_dict({**base, "train": {"layerwise_lr_decay": 1.5}}))


# --------------------------------------------------------------------------- pretrain -> fine-tune on real rows


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from polyfuse.api import fit

    out = tmp_path_factory.mktemp("pretrain") / "run"
    fit("avmnist-pretrain", out=out, overrides=[*TINY, "objectives.clip.dim=16", "train.epochs=1"])
    return out


def _encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in state.items() if k.startswith("encoders.")}


def test_pretraining_without_labels_then_finetuning_with_frozen_encoders(pretrained: Path, tmp_path: Path) -> None:
    from polyfuse.api import fit

    config = json.loads((pretrained / "metrics.json").read_text())
    assert config["monitor"] == "valid/loss" and "retrieval" in config  # no task in the pretraining run
    run = fit(
        "avmnist-finetune",
        out=tmp_path / "finetune",
        overrides=[*TINY, f"init_from={pretrained}", "data.max_train_rows=16", "train.epochs=1", "train.freeze_epochs=1"],
    )
    assert run.metrics["test"]["rows"] == 48  # max_train_rows leaves the evaluation splits whole
    before = load_file(str(pretrained / "model.safetensors"))
    after = load_file(str(tmp_path / "finetune" / "model.safetensors"))
    encoders = [k for k in after if k.startswith("encoders.")]
    assert encoders and all(k in before for k in encoders)
    # frozen for the whole (single) epoch: weights and BatchNorm statistics exactly the pretrained ones
    assert all(torch.equal(before[k], after[k]) for k in encoders)
    assert any(k.startswith("heads.") for k in after) and not any(k.startswith("objectives.") for k in after)


def test_frozen_epochs_leave_encoders_unchanged_and_later_epochs_train_them(pretrained: Path) -> None:
    from polyfuse.build import objective_weights
    from polyfuse.data.collate import Collator
    from polyfuse.data.prepare import prepare_data
    from polyfuse.recipes import load_recipe
    from polyfuse.train.datamodule import MultimodalDataModule
    from polyfuse.train.module import MultimodalLightningModule

    config = load_recipe(
        "avmnist-finetune",
        [*TINY, f"init_from={pretrained}", "data.max_train_rows=32", "train.freeze_epochs=1", "train.layerwise_lr_decay=0.5"],
    )
    prepared = prepare_data(config, splits=("train", "valid"), progress=False)
    pipeline = prepared.pipeline
    L.seed_everything(0, verbose=False)
    model = build_model(prepared.config, pipeline.specs(), pipeline.task_dims())
    loaded = load_matching_weights(model, pretrained)
    assert any(n.startswith("encoders.audio.") for n in loaded) and any(n.startswith("encoders.image.") for n in loaded)
    initial = _encoder_state(model.state_dict())
    snapshots: list[dict[str, torch.Tensor]] = []

    class Snapshot(L.Callback):
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            snapshots.append(_encoder_state(pl_module.model.state_dict()))

    module = MultimodalLightningModule(
        model, prepared.config.tasks, pipeline.task_dims(), prepared.config.train, objective_weights(prepared.config)
    )
    datamodule = MultimodalDataModule(prepared.datasets, Collator(pipeline), prepared.config.data, 0)
    trainer = L.Trainer(
        max_epochs=2, callbacks=[Snapshot()], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
    )
    trainer.fit(module, datamodule=datamodule)
    assert len(snapshots) == 2
    assert all(torch.equal(initial[k], snapshots[0][k]) for k in initial)  # epoch 0: frozen
    changed = [k for k in initial if k.endswith("weight") and not torch.equal(initial[k], snapshots[1][k])]
    assert any(k.startswith("encoders.audio.") for k in changed) and any(k.startswith("encoders.image.") for k in changed)
    scales = sorted({g["lr_scale"] for g in trainer.optimizers[0].param_groups})
    assert scales[-1] == 1.0 and scales[0] < 0.2  # deeper encoder blocks train slower
