"""Contract tests over every from-scratch encoder in the registry, plus kind-specific checks.

Every encoder: shapes and ``output_dim``, finite gradients on all parameters, batch of one,
missing rows finite, deterministic under a seed, padding invariance for variable-length kinds.
Pretrained encoders (metadata ``pretrained=True``) are tested by their own file.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch

import polyfuse.encoders  # noqa: F401  (registers)
from polyfuse.build import build_encoder
from polyfuse.config import ComponentConfig, ConfigError
from polyfuse.encoders.base import Encoder
from polyfuse.registry import ENCODERS
from component_fixtures import example_spec, random_inputs, trim_row
from polyfuse.types import INPUT_KEYS, INPUT_KINDS, EncoderOutput, InputSpec

DIM = 16
NAMES = [n for n in ENCODERS.names() if not ENCODERS.get(n).metadata.get("pretrained")]
#: smaller-than-default settings so that the contract tests stay fast
TINY: dict[str, dict[str, Any]] = {
    "cnn": {"channels": [8, 16]},
    "audio_cnn": {"channels": [4, 8], "n_mels": 16},
    "audio_transformer": {"n_mels": 16},
    "video_frames": {"frame_encoder": "lenet", "temporal": "transformer"},
}
VARIABLE_LENGTH = ("text", "audio", "sequence", "video")

EXPECTED = {  # docs/architecture.md
    "image": {"lenet", "cnn", "vit", "flatten"},
    "text": {"text_transformer", "text_rnn", "bag_of_embeddings"},
    "audio": {"audio_cnn", "audio_transformer"},
    "sequence": {"sequence_rnn", "sequence_cnn", "sequence_transformer", "sequence_stats"},
    "tabular": {"tabular_mlp", "tabular_transformer"},
    "video": {"video_frames"},
}


def kind_of(name: str) -> str:
    return ENCODERS.get(name).metadata["modalities"][0]


def make(name: str, spec: InputSpec | None = None, seed: int = 0, **params: Any) -> Encoder:
    spec = spec or example_spec(kind_of(name))
    torch.manual_seed(seed)
    return build_encoder(spec, ComponentConfig(name, {**TINY.get(name, {}), **params}), DIM)


def check_output(out: EncoderOutput, enc: Encoder, batch: int) -> None:
    assert out.tokens.dim() == 3 and out.tokens.shape[0] == batch and out.tokens.shape[2] == enc.output_dim
    assert out.pooled.shape == (batch, enc.output_dim)
    assert out.mask.shape == out.tokens.shape[:2] and out.mask.dtype == torch.bool
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()


# ----------------------------------------------------------------------------- registry


def test_every_documented_encoder_is_registered_for_its_kind() -> None:
    for kind, names in EXPECTED.items():
        assert names <= set(ENCODERS.names(modality=kind)), kind
    for name in NAMES:
        assert len(ENCODERS.get(name).metadata["modalities"]) == 1
        assert issubclass(ENCODERS.get(name).factory, Encoder)


# ----------------------------------------------------------------------------- contract, every encoder


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_and_backward(name: str) -> None:
    enc = make(name).train()
    spec = example_spec(kind_of(name))
    out = enc(random_inputs(spec, 3, missing_rows=[1]))
    check_output(out, enc, 3)
    (out.pooled.square().mean() + out.tokens.square().mean()).backward()
    for pname, p in enc.named_parameters():
        assert p.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for p in enc.parameters()) or not list(enc.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_batch_of_one(name: str) -> None:
    enc = make(name)
    x = random_inputs(example_spec(kind_of(name)), 1)
    check_output(enc.train()(x), enc, 1)
    with torch.no_grad():
        check_output(enc.eval()(x), enc, 1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("train", [True, False])
def test_missing_rows_are_finite(name: str, train: bool) -> None:
    enc = make(name).train(train)
    spec = example_spec(kind_of(name))
    every_row_missing = enc(random_inputs(spec, 2, missing_rows=[0, 1]))
    check_output(every_row_missing, enc, 2)
    some_missing = enc(random_inputs(spec, 3, missing_rows=[0, 2]))
    check_output(some_missing, enc, 3)
    if kind_of(name) in VARIABLE_LENGTH:  # missing rows have no valid token
        assert not some_missing.mask[[0, 2]].any() and some_missing.mask[1].any()


@pytest.mark.parametrize("name", NAMES)
def test_missing_rows_do_not_change_other_rows(name: str) -> None:
    enc = make(name).eval()
    spec = example_spec(kind_of(name))
    x = random_inputs(spec, 3)
    x_missing = random_inputs(spec, 3, missing_rows=[1])
    with torch.no_grad():
        a, b = enc(x).pooled, enc(x_missing).pooled
    torch.testing.assert_close(a[[0, 2]], b[[0, 2]], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_seed(name: str) -> None:
    spec = example_spec(kind_of(name))
    x = random_inputs(spec, 2)
    outs = []
    for _ in range(2):
        enc = make(name, seed=7).train()
        torch.manual_seed(1)  # dropout
        outs.append(enc(x).pooled)
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)
    other = make(name, seed=8).train()
    torch.manual_seed(1)
    assert not torch.equal(other(x).pooled, outs[0])


@pytest.mark.parametrize("name", [n for n in NAMES if kind_of(n) in VARIABLE_LENGTH])
def test_padding_does_not_change_a_row(name: str) -> None:
    kind = kind_of(name)
    enc = make(name).eval()
    x = random_inputs(example_spec(kind), 4, missing_rows=[3], seed=3)
    with torch.no_grad():
        batched = enc(x)
        for row in range(3):
            alone = enc(trim_row(kind, x, row))
            n = alone.tokens.shape[1]
            assert alone.tokens.shape[1] <= batched.tokens.shape[1]
            torch.testing.assert_close(alone.pooled[0], batched.pooled[row], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(alone.tokens[0], batched.tokens[row, :n], atol=1e-5, rtol=1e-5)
            assert batched.mask[row].sum() == alone.mask[0].sum()
            assert (batched.tokens[row][~batched.mask[row]] == 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_exports_to_onnx_with_a_dynamic_batch(name: str, tmp_path) -> None:
    """Traceable forward: the TorchScript-based ONNX exporter (fast) and onnxruntime agree."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    kind = kind_of(name)
    keys = list(INPUT_KEYS[kind])
    enc = make(name).eval()

    class Positional(torch.nn.Module):  # the exporter wants positional tensors in and out
        def __init__(self) -> None:
            super().__init__()
            self.enc = enc

        def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.enc(dict(zip(keys, tensors)))
            return out.tokens, out.pooled

    wrapper = Positional().eval()
    spec = example_spec(kind)
    x = random_inputs(spec, 3, missing_rows=[1])
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, tuple(x[k] for k in keys), str(path), dynamo=False, input_names=keys,
            output_names=["tokens", "pooled"], dynamic_axes={k: {0: "batch"} for k in keys}, opset_version=17,
        )
    other = random_inputs(spec, 2, missing_rows=[0], seed=4)  # another batch size, a missing row
    got = ort.InferenceSession(str(path)).run(None, {k: other[k].numpy() for k in keys})
    with torch.no_grad():
        want = wrapper(*(other[k] for k in keys))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- kind-specific


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("pool", ["last", "mean"])
@pytest.mark.parametrize("name", ["text_rnn", "sequence_rnn"])
def test_rnn_variants_are_padding_invariant(name: str, cell: str, bidirectional: bool, pool: str) -> None:
    kind = kind_of(name)
    enc = make(name, cell=cell, bidirectional=bidirectional, pool=pool, layers=2).eval()
    assert enc.output_dim == DIM
    x = random_inputs(example_spec(kind), 3, missing_rows=[2], seed=5)
    with torch.no_grad():
        batched = enc(x)
        for row in (0, 1):
            torch.testing.assert_close(enc(trim_row(kind, x, row)).pooled[0], batched.pooled[row], atol=1e-5, rtol=1e-5)
        assert (batched.pooled[2] == 0).all()


@pytest.mark.parametrize("name", ["text_transformer", "sequence_transformer", "audio_transformer", "vit"])
def test_transformer_pool_options(name: str) -> None:
    spec = example_spec(kind_of(name))
    x = random_inputs(spec, 2, missing_rows=[1])
    with torch.no_grad():
        cls, mean = make(name, pool="cls").eval()(x), make(name, pool="mean").eval()(x)
    assert torch.isfinite(cls.pooled).all() and not torch.allclose(cls.pooled, mean.pooled)
    if kind_of(name) != "image":
        torch.testing.assert_close(mean.pooled[1], torch.zeros(DIM))  # nothing to average
    with pytest.raises(ConfigError, match="pool"):
        make(name, pool="max_of_everything")


def test_text_ignores_out_of_vocabulary_ids() -> None:
    enc = make("text_transformer").eval()
    x = random_inputs(example_spec("text"), 2)
    x["input_ids"][0, 0] = 10_000
    assert torch.isfinite(enc(x).pooled).all()


def test_image_token_counts() -> None:
    digits = InputSpec("digits", "image", channels=1, height=28, width=28)
    lenet = make("lenet", digits)
    out = lenet(random_inputs(digits, 2))
    assert out.tokens.shape == (2, 49, DIM)  # 7x7 feature map of a 28x28 digit
    vit = make("vit", example_spec("image"), patch_size=4)
    assert vit(random_inputs(example_spec("image"), 2)).tokens.shape == (2, 16, DIM)
    odd = InputSpec("odd", "image", channels=3, height=20, width=12)
    assert torch.isfinite(make("lenet", odd)(random_inputs(odd, 2)).pooled).all()
    with pytest.raises(ConfigError, match="too small"):
        make("cnn", InputSpec("tiny", "image", channels=3, height=4, width=4), channels=[8, 8, 8])


def test_flatten_raw_pixels() -> None:
    spec = example_spec("image")
    enc = make("flatten", project=False)
    x = random_inputs(spec, 2)
    assert enc.output_dim == 3 * 16 * 16
    torch.testing.assert_close(enc(x).pooled, x["pixels"].flatten(1))
    assert make("flatten", downsample=4, project=False).output_dim == 3 * 4 * 4


@pytest.mark.parametrize("features", ["logmel", "mfcc"])
def test_audio_frames_follow_lengths(features: str) -> None:
    spec = example_spec("audio")
    enc = make("audio_cnn", features=features, n_mfcc=8).eval()
    hop = enc.features.hop
    x = random_inputs(spec, 3, missing_rows=[2])
    out = enc(x)
    assert out.tokens.shape[1] == 1 + spec.num_samples // hop
    expected = [1 + int(n) // hop if n > 0 else 0 for n in x["lengths"]]
    assert out.mask.sum(1).tolist() == expected
    with pytest.raises(ConfigError, match="n_mfcc"):
        make("audio_cnn", features="mfcc", n_mels=8, n_mfcc=13)


def test_sequence_stats_match_numpy() -> None:
    spec = example_spec("sequence")
    enc = make("sequence_stats", project=False)
    x = random_inputs(spec, 3, missing_rows=[2])
    out = enc(x).pooled.detach().numpy()
    for row in (0, 1):
        frames = x["values"][row][x["mask"][row]].numpy()
        ref = np.concatenate([frames.mean(0), np.sqrt(frames.var(0) + 1e-5), frames.min(0), frames.max(0)])
        np.testing.assert_allclose(out[row], ref, atol=1e-5)
    assert (out[2] == 0).all()
    assert make("sequence_stats", stats=["mean", "max"], project=False).output_dim == 2 * spec.feature_dim
    with pytest.raises(ConfigError, match="stats"):
        make("sequence_stats", stats=["median"])


@pytest.mark.parametrize("name", ["tabular_mlp", "tabular_transformer", "tabular_linear"])
def test_tabular_column_layouts(name: str) -> None:
    numeric_only = InputSpec("t", "tabular", num_numeric=4)
    categorical_only = InputSpec("t", "tabular", cat_cardinalities=[3, 5, 2])
    for spec in (numeric_only, categorical_only):
        enc = make(name, spec)
        out = enc(random_inputs(spec, 2, missing_rows=[1]))
        check_output(out, enc, 2)
        if name == "tabular_transformer":
            assert out.tokens.shape[1] == 1 + spec.num_numeric + len(spec.cat_cardinalities)
    spec = example_spec("tabular")
    x = random_inputs(spec, 2)
    x["categorical"][0, 0] = 99  # unseen id -> unknown, no crash
    x["categorical"][1, 1] = -3
    assert torch.isfinite(make(name).eval()(x).pooled).all()
    with pytest.raises(ConfigError, match="no numeric and no categorical"):
        make(name, InputSpec("t", "tabular"))


def test_tabular_transformer_categories_change_output() -> None:
    enc = make("tabular_transformer").eval()
    x = random_inputs(example_spec("tabular"), 2)
    y = {k: v.clone() for k, v in x.items()}
    y["categorical"][0, 1] = (x["categorical"][0, 1] + 1) % 3
    with torch.no_grad():
        a, b = enc(x).pooled, enc(y).pooled
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])


@pytest.mark.parametrize("temporal", ["mean", "transformer"])
@pytest.mark.parametrize("frame_encoder", ["lenet", "vit", "flatten"])
def test_video_frame_encoders(frame_encoder: str, temporal: str) -> None:
    spec = example_spec("video")
    enc = make("video_frames", frame_encoder=frame_encoder, temporal=temporal).eval()
    x = random_inputs(spec, 2, missing_rows=[1])
    out = enc(x)
    check_output(out, enc, 2)
    assert out.tokens.shape[1] == spec.num_frames
    assert out.mask.tolist() == x["frame_mask"].tolist()


def test_video_frames_config_errors() -> None:
    with pytest.raises(ConfigError, match="frame_encoder"):
        make("video_frames", frame_encoder="text_rnn")
    with pytest.raises(ConfigError, match="in_channels"):
        make("video_frames", frame_encoder_params={"in_channels": 1})
    enc = make("video_frames", frame_encoder="vit", frame_encoder_params={"patch_size": 8, "depth": 1})
    assert enc.frame_encoder.patch_embed.patch_size == 8


def test_bad_hyper_parameters_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="cell"):
        make("text_rnn", cell="rnn")
    with pytest.raises(ConfigError, match="heads"):
        make("text_transformer", heads=5)
    with pytest.raises(ConfigError, match="kernel_size"):
        make("sequence_cnn", kernel_size=4)
    with pytest.raises(ConfigError, match="depth"):
        make("vit", depth=0)


# ----------------------------------------------------------------------------- test helpers


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_random_inputs_follow_the_batch_layout(kind: str) -> None:
    spec = example_spec(kind)
    x = random_inputs(spec, 4, missing_rows=[2])
    assert set(x) == set(INPUT_KEYS[kind])
    for key, tensor in x.items():
        declared = INPUT_KEYS[kind][key].split()[0]
        assert {"float": torch.float32, "long": torch.int64, "bool": torch.bool}[declared] == tensor.dtype
        assert tensor.shape[0] == 4
        if tensor.dtype != torch.bool:
            assert (tensor[2] == 0).all()  # missing row: zeros
    mask_key = {"text": "attention_mask", "sequence": "mask", "video": "frame_mask"}.get(kind)
    if mask_key:
        assert not x[mask_key][2].any() and x[mask_key][0].all()
        lengths = x[mask_key].long().sum(1)
        assert len(set(lengths.tolist())) > 1
    torch.testing.assert_close(random_inputs(spec, 4, seed=3), random_inputs(spec, 4, seed=3))


def test_lenet_tokens_are_the_first_fully_connected_layer_per_position() -> None:
    digits = InputSpec("digits", "image", channels=1, height=28, width=28)
    enc = make("lenet", digits).eval()
    x = random_inputs(digits, 2)
    with torch.no_grad():
        out = enc(x)
        fmap = enc.pool(enc.features(x["pixels"])).flatten(1)  # [B, C*P] in (channel, position) order
        weight = enc.fc1_weight.permute(2, 1, 0).reshape(DIM, -1)  # the equivalent flat Linear weight
        torch.testing.assert_close(out.pooled, enc.head(fmap @ weight.T + enc.fc1_bias), atol=1e-5, rtol=1e-5)
