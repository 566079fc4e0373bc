"""Fixed features computed once per row: reused from disk, invalidated by weights or preprocessing, same model outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from polyfuse.build import build_model
from polyfuse.config import Config
from polyfuse.data.prepare import prepare_data
from polyfuse.encoders.features import FEATURES_KEY, SequenceRocketEncoder
from polyfuse.train.features import FeatureStore, feature_collator, precompute_features


def config_for(avmnist, n: int, image_size: int = 28, seed: int = 0) -> Config:
    return Config.from_dict({
        "name": "cache",
        "data": {"train": str(avmnist.train), "test": str(avmnist.test), "root": str(avmnist.root), "max_rows": n,
                 "split": {"valid": 0.2, "test": 0.0},
                 "inputs": {"audio": {"kind": "sequence", "column": "audio"},
                            "image": {"kind": "image", "column": "image", "size": [image_size, image_size]}}},
        "model": {"encoders": {"audio": {"name": "sequence_rocket", "dilations": 3, "seed": seed},
                               "image": {"name": "image_pixels", "grid": 4}}, "dim": 16},
        "tasks": {"digit": {"column": "label"}},
    })


def prepared_model(config: Config):  # noqa: ANN201
    prepared = prepare_data(config, progress=False)
    model = build_model(prepared.config, prepared.pipeline.specs(), prepared.pipeline.task_dims())
    return prepared, model


def test_disk_cache_is_reused_and_gives_the_same_features(avmnist, tmp_path: Path) -> None:
    config = config_for(avmnist, 48)
    prepared, model = prepared_model(config)
    first, report1 = precompute_features(model, prepared.pipeline, prepared.datasets, cache_dir=tmp_path, progress=False)
    assert report1.inputs["audio"]["computed_rows"] == len(prepared.datasets["train"]) + len(prepared.datasets["valid"]) + len(prepared.datasets["test"])
    prepared2, model2 = prepared_model(config)
    second, report2 = precompute_features(model2, prepared2.pipeline, prepared2.datasets, cache_dir=tmp_path, progress=False)
    assert report2.inputs["audio"]["computed_rows"] == 0 and report2.inputs["image"]["computed_rows"] == 0
    for split in first:
        np.testing.assert_array_equal(first[split].features["audio"], second[split].features["audio"])
    assert torch.equal(model.encoders["audio"].feature_mean, model2.encoders["audio"].feature_mean)


def test_cache_misses_when_preprocessing_or_extractor_weights_change(avmnist, tmp_path: Path) -> None:
    prepared, model = prepared_model(config_for(avmnist, 32))
    precompute_features(model, prepared.pipeline, prepared.datasets, cache_dir=tmp_path, progress=False)
    resized, model_r = prepared_model(config_for(avmnist, 32, image_size=20))  # other preprocessing of the image
    _, report = precompute_features(model_r, resized.pipeline, resized.datasets, cache_dir=tmp_path, progress=False)
    assert report.inputs["image"]["cached_rows"] == 0 and report.inputs["audio"]["computed_rows"] == 0
    reseeded, model_s = prepared_model(config_for(avmnist, 32, seed=1))  # other random kernels
    _, report = precompute_features(model_s, reseeded.pipeline, reseeded.datasets, cache_dir=tmp_path, progress=False)
    assert report.inputs["audio"]["cached_rows"] == 0 and report.inputs["image"]["computed_rows"] == 0


def test_model_gives_the_same_outputs_from_cached_features_and_from_raw_rows(avmnist, tmp_path: Path) -> None:
    prepared, model = prepared_model(config_for(avmnist, 40))
    datasets, _ = precompute_features(model, prepared.pipeline, prepared.datasets, cache_dir=tmp_path, progress=False)
    model.eval()
    cached = feature_collator(prepared.pipeline, model, datasets)([datasets["test"][i] for i in range(8)])
    raw = prepared.pipeline.collate([prepared.datasets["test"][i] for i in range(8)])
    from polyfuse.data.collate import to_torch

    raw = to_torch(raw)
    assert FEATURES_KEY in cached["inputs"]["audio"] and FEATURES_KEY not in raw["inputs"]["audio"]
    with torch.no_grad():
        a = model(cached["inputs"], cached["present"]).outputs["digit"]
        b = model(raw["inputs"], raw["present"]).outputs["digit"]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_store_ignores_a_torn_chunk(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, "f" * 64)
    store.add([b"k" * 32], np.ones((1, 3), dtype=np.float32))
    (store.folder / "broken.npz").write_bytes(b"not a zip")
    fresh = FeatureStore(tmp_path, "f" * 64).load()
    assert list(fresh) == [b"k" * 32]


def test_rocket_biases_are_fitted_from_training_rows_and_saved_as_buffers() -> None:
    enc = SequenceRocketEncoder(feature_dim=2, dim=4, dilations=2, biases=2)
    before = enc.extractor_fingerprint()
    t = torch.linspace(0, 12, 80)
    values = torch.stack([torch.sin(t), torch.cos(2 * t)], dim=-1).repeat(6, 1, 1)  # [6, 80, 2]
    enc.fit_extractor({"values": values, "mask": torch.ones(6, 80, dtype=torch.bool)})
    assert enc.extractor_fingerprint() != before
    assert "bias" in enc.state_dict() and enc.bias.abs().sum() > 0
    features = enc.extract({"values": values, "mask": torch.ones(6, 80, dtype=torch.bool)})
    ppv = features[:, : enc.num_dilations * 84 * enc.num_biases]
    assert 0.2 < float(ppv.mean()) < 0.8  # quantile biases: proportions spread around the middle


def test_series_summary_matches_numpy_on_each_rows_valid_frames() -> None:
    import numpy as np

    from polyfuse.encoders.features import SequenceSummaryEncoder

    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 50, 2)).astype(np.float32)
    mask = np.ones((3, 50), dtype=bool)
    mask[1, 31:] = False  # a shorter row: its padding must not count
    mask[2] = False  # an empty row
    features = SequenceSummaryEncoder(feature_dim=2).extract({"values": torch.tensor(values), "mask": torch.tensor(mask)})
    assert features.shape == (3, 24)
    x = values[1, :31].astype(np.float64)
    d = np.diff(x, axis=0)
    t = np.arange(31.0)
    slope = ((t - t.mean())[:, None] * (x - x.mean(0))).sum(0) / ((t - t.mean()) ** 2).sum() * 31  # time in row lengths
    expected = np.concatenate([x.mean(0), x.std(0), x.min(0), x.max(0), np.quantile(x, [0.1, 0.25, 0.5, 0.75, 0.9], axis=0).ravel(),
                               slope, np.abs(d).mean(0), d.std(0)])
    np.testing.assert_allclose(features[1].numpy(), expected, rtol=1e-4, atol=1e-5)
    assert float(features[2].abs().max()) == 0.0


@pytest.mark.parametrize("mode", ["memory", "off"])
def test_other_cache_modes_store_nothing(avmnist, tmp_path: Path, mode: str) -> None:
    prepared, model = prepared_model(config_for(avmnist, 24))
    datasets, report = precompute_features(model, prepared.pipeline, prepared.datasets, mode=mode, cache_dir=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())
    assert (type(datasets["train"]).__name__ == "FeatureDataset") == (mode == "memory")
    assert report.inputs["audio"]["computed_rows"] > 0


def test_feature_cache_off_survives_yaml_reading_off_as_false() -> None:
    config = Config.from_dict({"data": {"train": "x.csv"}}).with_overrides(["train.feature_cache=off"])
    assert config.train.feature_cache == "off"


def test_evaluation_extracts_each_batch_once_and_forgets_afterwards() -> None:
    from polyfuse.encoders.extraction_memo import MEMO, remembering_extractions

    torch.manual_seed(0)
    enc, twin = (SequenceRocketEncoder(feature_dim=2, dim=4, dilations=2, biases=2) for _ in range(2))
    twin.load_state_dict(enc.state_dict())  # another model carrying the same extractor
    enc.eval(), twin.eval()
    batch = {"values": torch.randn(5, 60, 2), "mask": torch.ones(5, 60, dtype=torch.bool)}
    calls = []
    for e in (enc, twin):
        original = e.extract
        e.extract = lambda inputs, original=original: calls.append(1) or original(inputs)  # type: ignore[method-assign]
    with torch.no_grad():
        plain = enc(batch).pooled
        assert len(calls) == 1 and not MEMO.active  # outside the block: extracted every time
        with remembering_extractions():
            first = enc(batch).pooled
            again = twin({k: v.clone() for k, v in batch.items()}).pooled  # same content, same extractor: remembered
            assert len(calls) == 2 and MEMO.hits == 1
            torch.testing.assert_close(first, plain)
            torch.testing.assert_close(again, twin(batch).pooled)
            changed = {"values": batch["values"] + 1.0, "mask": batch["mask"]}
            enc(changed)  # other content: extracted
            assert len(calls) == 3
            enc.bias.add_(0.5)  # the extractor changed in place: its old entries no longer match
            enc(batch)
            assert len(calls) == 4
            with torch.enable_grad():
                enc.train()
                enc(batch)  # training never uses the memo
                enc.eval()
            assert len(calls) == 5
        assert MEMO.hits == 0 and not MEMO._entries  # emptied when the block ends
