"""Processors on real generated files: fitting, shapes, missing values, errors, state round trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from polyfuse.config import AugmentConfig, ConfigError
from polyfuse.data.labels import IGNORE_INDEX, LabelEncoder
from polyfuse.data.processors import (
    AudioProcessor, FitContext, ImageProcessor, RowContext, SequenceProcessor, TabularProcessor, TextProcessor,
    VideoProcessor,
)
from polyfuse.errors import DataError
from polyfuse.registry import PROCESSORS


def ctx(root: Path, row: int = 0, split: str | None = "valid") -> RowContext:
    return RowContext(root=root, source="m.csv", row=row, split=split)


def save_png(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return path.name


def roundtrip(proc, tmp: Path, name: str = "x"):  # noqa: ANN001, ANN201
    """A fresh processor restored from the JSON state (and files) of ``proc``."""
    state = json.loads(json.dumps(proc.state_dict()))
    clone = PROCESSORS.build(proc.kind, **json.loads(json.dumps(proc.options)))
    clone.load_state_dict(state)
    proc.save_files(tmp, name)
    clone.load_files(tmp, name)
    return clone


# --------------------------------------------------------------------------- image


def test_registered_kinds() -> None:
    assert set(PROCESSORS.names()) == {"image", "text", "audio", "sequence", "tabular", "video"}


def test_image_fits_channels_size_and_stats_on_train(tmp_path: Path) -> None:
    gen = np.random.default_rng(0)
    files = [save_png(tmp_path / f"g{i}.png", gen.integers(0, 256, (12, 10), dtype=np.uint8)) for i in range(6)]
    frame = pd.DataFrame({"img": files})
    proc = ImageProcessor(column="img")
    proc.fit(frame, FitContext(root=tmp_path, source="m.csv"))
    spec = proc.spec("img")
    assert (spec.channels, spec.height, spec.width) == (1, 12, 10)
    pixels = np.stack([proc.process({"img": f}, ctx(tmp_path))["pixels"] for f in files])
    assert pixels.shape == (6, 1, 12, 10) and pixels.dtype == np.float32
    assert abs(float(pixels.mean())) < 1e-4 and abs(float(pixels.std()) - 1) < 1e-3
    expected = np.asarray(Image.open(tmp_path / files[0]), np.float32) / 255.0
    np.testing.assert_allclose(pixels[0, 0], (expected - proc.transform.mean[0]) / proc.transform.std[0], atol=1e-5)
    # uploaded bytes give the same arrays as the path
    raw = (tmp_path / files[0]).read_bytes()
    np.testing.assert_array_equal(proc.process({"img": raw}, ctx(tmp_path))["pixels"], pixels[0])
    assert proc.process({"img": None}, ctx(tmp_path)) is None
    assert proc.process({"img": "  "}, ctx(tmp_path)) is None


def test_image_resize_crop_rgb_and_roundtrip(tmp_path: Path) -> None:
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, 10:30] = (255, 0, 0)  # red centre, black sides
    name = save_png(tmp_path / "wide.png", rgb)
    frame = pd.DataFrame({"img": [name]})
    crop = ImageProcessor(column="img", size=[8, 8], crop=True, mean=[0.0], std=[1.0])
    crop.fit(frame, FitContext(root=tmp_path))
    out = crop.process({"img": name}, ctx(tmp_path))["pixels"]
    assert out.shape == (3, 8, 8)
    assert out[0].mean() > 0.9 and out[1].max() < 1e-6  # the centre crop is red only
    squash = ImageProcessor(column="img", size=[8, 8], mean=[0.0], std=[1.0])
    squash.fit(frame, FitContext(root=tmp_path))
    assert squash.process({"img": name}, ctx(tmp_path))["pixels"][0].mean() < 0.7  # black sides kept
    clone = roundtrip(crop, tmp_path)
    np.testing.assert_array_equal(clone.process({"img": name}, ctx(tmp_path))["pixels"], out)
    batch = crop.collate([{"pixels": out}, None])
    assert batch["pixels"].shape == (2, 3, 8, 8) and not batch["pixels"][1].any()


def test_image_errors_name_file_row_column(tmp_path: Path) -> None:
    save_png(tmp_path / "ok.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 3)
    proc = ImageProcessor(column="img", channels=1, size=[4, 4], mean=[0.5], std=[0.5])
    proc.fit(pd.DataFrame({"img": ["ok.png"]}), FitContext(root=tmp_path))
    for value in ("bad.png", "missing.png", "../escape.png"):
        with pytest.raises(DataError) as info:
            proc.process({"img": value}, ctx(tmp_path, row=7))
        assert (info.value.file, info.value.row, info.value.column) == ("m.csv", 7, "img")
        assert info.value.category in ("unreadable file", "file missing or not allowed")
    with pytest.raises(ConfigError, match="channels"):
        ImageProcessor(column="img", channels=2)
    with pytest.raises(ConfigError, match="size"):
        ImageProcessor(column="img", size=[0, 3])


def test_image_augment_is_seeded(tmp_path: Path) -> None:
    name = save_png(tmp_path / "a.png", np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    proc = ImageProcessor(column="img")
    proc.fit(pd.DataFrame({"img": [name]}), FitContext(root=tmp_path))
    arrays = proc.process({"img": name}, ctx(tmp_path))
    cfg = AugmentConfig(enabled=True, image_crop=0.5, image_flip=True, image_jitter=0.3)
    a = proc.augment(arrays, np.random.default_rng(5), cfg)["pixels"]
    b = proc.augment(arrays, np.random.default_rng(5), cfg)["pixels"]
    np.testing.assert_array_equal(a, b)
    assert a.shape == arrays["pixels"].shape and not np.allclose(a, arrays["pixels"])
    np.testing.assert_array_equal(proc.augment(arrays, np.random.default_rng(5), AugmentConfig())["pixels"], arrays["pixels"])


# --------------------------------------------------------------------------- text


TEXTS = [
    "a small red circle on the left", "the blue square is large", "what colour is the triangle",
    "is there a green circle", "how many shapes are there", "a large yellow triangle",
]


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_text_tokenizer_trained_on_train_and_deterministic(tmp_path: Path, kind: str) -> None:
    frame = pd.DataFrame({"q": TEXTS})
    proc = TextProcessor(column="q", tokenizer=kind, vocab_size=300, max_length=24)
    proc.fit(frame, FitContext(root=tmp_path))
    other = TextProcessor(column="q", tokenizer=kind, vocab_size=300, max_length=24)
    other.fit(frame, FitContext(root=tmp_path))
    out = proc.process({"q": "The BLUE circle"}, ctx(tmp_path))
    assert out["input_ids"].dtype == np.int64 and out["attention_mask"].tolist() == [1] * len(out["input_ids"])
    np.testing.assert_array_equal(out["input_ids"], other.process({"q": "The BLUE circle"}, ctx(tmp_path))["input_ids"])
    assert proc.decode(out["input_ids"]).strip().lower().replace(" ", "") == "thebluecircle"
    long = proc.process({"q": " ".join(TEXTS)}, ctx(tmp_path))
    assert len(long["input_ids"]) == 24  # truncated to max_length
    spec = proc.spec("q")
    assert spec.vocab_size and spec.vocab_size <= 300 and spec.max_length == 24
    assert int(out["input_ids"].max()) < spec.vocab_size
    clone = roundtrip(proc, tmp_path, "q")
    assert (tmp_path / "q.tokenizer.json").is_file()
    np.testing.assert_array_equal(clone.process({"q": "The BLUE circle"}, ctx(tmp_path))["input_ids"], out["input_ids"])
    batch = proc.collate([out, None, long])
    assert batch["input_ids"].shape == (3, 24)
    assert (batch["input_ids"][1] == spec.pad_id).all() and not batch["attention_mask"][1].any()
    assert batch["attention_mask"][0].sum() == len(out["input_ids"])


def test_text_missing_join_and_minilm(tmp_path: Path) -> None:
    proc = TextProcessor(column=["title", "body"], tokenizer="minilm", max_length=16)
    proc.fit(pd.DataFrame({"title": ["x"], "body": ["y"]}), FitContext(root=tmp_path))
    out = proc.process({"title": "Hello", "body": "world"}, ctx(tmp_path))
    # all-MiniLM-L6-v2 (BERT uncased vocabulary): [CLS] hello . world [SEP]
    assert out["input_ids"].tolist() == [101, 7592, 1012, 2088, 102]
    assert proc.process({"title": "Hello", "body": None}, ctx(tmp_path))["input_ids"].tolist() == [101, 7592, 102]
    assert proc.process({"title": "  ", "body": float("nan")}, ctx(tmp_path)) is None
    spec = proc.spec("t")
    assert spec.vocab_size == 30522 and spec.pad_id == 0 and "pretrained" in spec.extra
    with pytest.raises(ConfigError, match="tokenizer"):
        TextProcessor(column="q", tokenizer="no-such-tokenizer").fit(pd.DataFrame({"q": ["a"]}), FitContext())


def test_text_token_ids_remembered_per_text_and_never_shared(tmp_path: Path) -> None:
    from tokenizers import models

    proc = TextProcessor(column="q", vocab_size=100)
    proc.fit(pd.DataFrame({"q": TEXTS}), FitContext(root=tmp_path))
    calls = []
    encode = proc.tokenizer.encode

    class Counting:  # the tokenizer object cannot be patched: wrap it
        def __init__(self, inner):
            self.inner = inner

        def encode(self, text):
            calls.append(text)
            return encode(text)

    inner, proc.tokenizer = proc.tokenizer, Counting(proc.tokenizer)
    first = proc.process({"q": TEXTS[0]}, ctx(tmp_path))
    first["input_ids"][:] = -1  # a caller changing its arrays does not change the next row's
    second = proc.process({"q": TEXTS[0]}, ctx(tmp_path))
    assert calls == [TEXTS[0]] and (second["input_ids"] >= 0).all()
    np.testing.assert_array_equal(second["input_ids"], np.asarray(encode(TEXTS[0]).ids))
    proc.tokenizer = inner
    # a tokenizer whose encoding is random (BPE dropout) is asked every time
    inner.model = models.BPE(dropout=0.5)
    proc._configure(inner)
    assert proc._token_cache is None


def test_text_token_dropout_keeps_specials(tmp_path: Path) -> None:
    proc = TextProcessor(column="q", vocab_size=100)
    proc.fit(pd.DataFrame({"q": TEXTS}), FitContext(root=tmp_path))
    arrays = proc.process({"q": TEXTS[0]}, ctx(tmp_path))
    out = proc.augment(arrays, np.random.default_rng(0), AugmentConfig(enabled=True, text_token_dropout=0.9))
    ids = out["input_ids"]
    assert len(ids) < len(arrays["input_ids"]) and ids[0] == arrays["input_ids"][0] and ids[-1] == arrays["input_ids"][-1]
    assert len(out["attention_mask"]) == len(ids)


# --------------------------------------------------------------------------- audio


def sine(path: Path, seconds: float, rate: int = 8000, freq: float = 440.0) -> str:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)
    return path.name


def test_audio_duration_crop_pad_and_lengths(tmp_path: Path) -> None:
    long, short = sine(tmp_path / "long.wav", 0.5), sine(tmp_path / "short.wav", 0.1)
    proc = AudioProcessor(column="a", sample_rate=8000, duration=0.25)
    proc.fit(pd.DataFrame({"a": [long, short]}), FitContext(root=tmp_path))
    assert proc.spec("a").num_samples == 2000 and proc.spec("a").sample_rate == 8000
    eval_long = proc.process({"a": long}, ctx(tmp_path))
    assert eval_long["waveform"].shape == (2000,)
    train_long = proc.process({"a": long}, ctx(tmp_path, split="train"))
    assert train_long["waveform"].shape == (4000,)  # full clip kept for the random training crop
    batch = proc.collate([train_long, proc.process({"a": short}, ctx(tmp_path)), None])
    assert batch["waveform"].shape == (3, 2000) and batch["lengths"].tolist() == [2000, 800, 0]
    np.testing.assert_array_equal(batch["waveform"][0], eval_long["waveform"])  # collate centre-crops
    assert not batch["waveform"][1, 800:].any()
    cfg = AugmentConfig(enabled=True, audio_gain_db=6, audio_noise=0.05, audio_time_mask=5)
    a = proc.augment(train_long, np.random.default_rng(3), cfg)["waveform"]
    np.testing.assert_array_equal(a, proc.augment(train_long, np.random.default_rng(3), cfg)["waveform"])
    assert a.shape == (2000,)
    free = AudioProcessor(column="a", sample_rate=8000, duration=None)
    batch = free.collate([free.process({"a": long}, ctx(tmp_path)), free.process({"a": short}, ctx(tmp_path))])
    assert batch["waveform"].shape == (2, 4000) and batch["lengths"].tolist() == [4000, 800]
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00")
    with pytest.raises(DataError) as info:
        proc.process({"a": "broken.wav"}, ctx(tmp_path, row=3))
    assert info.value.row == 3 and info.value.column == "a"


# --------------------------------------------------------------------------- sequence


def test_sequence_normalized_on_train_padded_and_masked(tmp_path: Path) -> None:
    gen = np.random.default_rng(0)
    seqs = [gen.normal(5.0, 2.0, (n, 3)).astype(np.float32) for n in (4, 7, 5)]
    for i, s in enumerate(seqs):
        np.save(tmp_path / f"s{i}.npy", s)
    np.savetxt(tmp_path / "s.csv", seqs[0], delimiter=",")
    frame = pd.DataFrame({"s": [f"s{i}.npy" for i in range(3)]})
    proc = SequenceProcessor(column="s", max_length=6)
    proc.fit(frame, FitContext(root=tmp_path))
    frames = np.concatenate([s[:6] for s in seqs])
    np.testing.assert_allclose(proc.mean, frames.mean(0), rtol=1e-5)
    np.testing.assert_allclose(proc.std, frames.std(0), rtol=1e-4)
    items = [proc.process({"s": f}, ctx(tmp_path)) for f in frame["s"]]
    assert [len(i["values"]) for i in items] == [4, 6, 5]  # truncated to max_length
    from_csv = proc.process({"s": "s.csv"}, ctx(tmp_path))["values"]
    np.testing.assert_allclose(from_csv, items[0]["values"], atol=1e-5)
    inline = proc.process({"s": seqs[0].tolist()}, ctx(tmp_path))["values"]
    np.testing.assert_allclose(inline, items[0]["values"], atol=1e-5)
    batch = proc.collate(items + [None])
    assert batch["values"].shape == (4, 6, 3) and batch["mask"].dtype == bool
    assert batch["mask"].sum(1).tolist() == [4, 6, 5, 0]
    assert proc.spec("s").feature_dim == 3
    np.save(tmp_path / "wrong.npy", np.zeros((4, 2), np.float32))
    with pytest.raises(DataError, match="2 features per frame, expected 3"):
        proc.process({"s": "wrong.npy"}, ctx(tmp_path))
    clone = roundtrip(proc, tmp_path)
    np.testing.assert_array_equal(clone.process({"s": "s1.npy"}, ctx(tmp_path))["values"], items[1]["values"])
    cfg = AugmentConfig(enabled=True, audio_time_mask=2, audio_freq_mask=1, sequence_noise=0.1)
    a = proc.augment(items[1], np.random.default_rng(0), cfg)["values"]
    np.testing.assert_array_equal(a, proc.augment(items[1], np.random.default_rng(0), cfg)["values"])
    assert a.shape == items[1]["values"].shape


# --------------------------------------------------------------------------- tabular


def test_tabular_imputation_indicators_vocab(tmp_path: Path) -> None:
    train = pd.DataFrame(
        {"age": [20.0, 30.0, np.nan, 50.0], "score": [1.0, 2.0, 3.0, 4.0], "city": ["a", "b", "a", "c"]}
    )
    proc = TabularProcessor(numeric=["age", "score"], categorical=["city"], min_frequency=2)
    proc.fit(train, FitContext(root=tmp_path))
    assert proc.median["age"] == 30.0 and proc.indicators == ["age"]
    assert proc.vocab["city"] == ["a"]  # b, c seen once < min_frequency
    spec = proc.spec("tab")
    assert spec.num_numeric == 3 and spec.cat_cardinalities == [2]
    c = ctx(tmp_path, row=4)
    out = proc.process({"age": "not a number", "score": float("inf"), "city": "b"}, c)
    mean_age, std_age = np.mean([20, 30, 50]), np.std([20, 30, 50])
    np.testing.assert_allclose(out["numeric"], [(30 - mean_age) / std_age, (2.5 - 2.5) / np.std([1, 2, 3, 4]), 1.0], atol=1e-6)
    assert out["categorical"].tolist() == [0]
    assert sorted(n.column for n in c.notes) == ["age", "score"] and all(n.stage == "imputed" for n in c.notes)
    assert "not a number" in next(n.reason for n in c.notes if n.column == "age")
    ok = ctx(tmp_path)
    assert proc.process({"age": 20, "score": 1, "city": "a"}, ok)["categorical"].tolist() == [1] and not ok.notes
    assert proc.process({"age": None, "score": np.nan, "city": ""}, ctx(tmp_path)) is None
    clone = roundtrip(proc, tmp_path)
    row = {"age": 45, "score": 3, "city": "a"}
    np.testing.assert_array_equal(clone.process(row, ctx(tmp_path))["numeric"], proc.process(row, ctx(tmp_path))["numeric"])
    batch = proc.collate([out, None])
    assert batch["numeric"].shape == (2, 3) and batch["categorical"].shape == (2, 1)
    with pytest.raises(ConfigError):
        TabularProcessor()


# --------------------------------------------------------------------------- video


def test_video_uniform_frames_and_mask(tmp_path: Path) -> None:
    clip = np.stack([np.full((6, 6, 3), i * 20, np.uint8) for i in range(10)])
    np.save(tmp_path / "clip.npy", clip)
    np.save(tmp_path / "short.npy", clip[:2])
    proc = VideoProcessor(column="v", num_frames=4, size=[4, 4], channels=3, mean=[0.0], std=[1.0])
    proc.fit(pd.DataFrame({"v": ["clip.npy"]}), FitContext(root=tmp_path))
    out = proc.process({"v": "clip.npy"}, ctx(tmp_path))["frames"]
    assert out.shape == (4, 3, 4, 4)
    np.testing.assert_allclose(out[:, 0, 0, 0] * 255, [0, 60, 120, 180], atol=1e-3)  # frames 0, 3, 6, 9
    short = proc.process({"v": "short.npy"}, ctx(tmp_path))
    batch = proc.collate([{"frames": out}, short, None])
    assert batch["frames"].shape == (3, 4, 3, 4, 4)
    assert batch["frame_mask"].tolist() == [[True] * 4, [True, True, False, False], [False] * 4]
    spec = proc.spec("v")
    assert (spec.num_frames, spec.channels, spec.height) == (4, 3, 4)


# --------------------------------------------------------------------------- labels


def test_label_encoders() -> None:
    enc = LabelEncoder("y").fit(pd.Series(["dog", "cat", None, "dog", "bird"]))
    assert enc.classes == ["bird", "cat", "dog"] and enc.dim == 3
    assert enc.encode("cat")[0] == 1
    target, problem = enc.encode("fish", "animal")
    assert target == IGNORE_INDEX and problem is not None and "fish" in problem.reason and problem.category == "unseen label"
    assert enc.encode(float("nan"))[0] == IGNORE_INDEX
    assert enc.decode([2, IGNORE_INDEX]) == ["dog", None]
    ints = LabelEncoder("d").fit(pd.Series([3.0, 1.0, 10.0]))
    assert ints.classes == [1, 3, 10] and ints.encode("3")[0] == 1  # 3.0, 3 and "3" are one class
    fixed = LabelEncoder("y", classes=["z", "a"]).fit(pd.Series(["a", "b"]))
    assert fixed.classes == ["z", "a"] and fixed.encode("b")[0] == IGNORE_INDEX
    reg = LabelEncoder("v", "regression")
    assert reg.encode("2.5")[0] == np.float32(2.5) and np.isnan(reg.encode("x")[0]) and reg.dim == 1
    multi = LabelEncoder("tags", "multilabel").fit(pd.Series(["a|b", ["c"], None, "b"]))
    assert multi.classes == ["a", "b", "c"]
    np.testing.assert_array_equal(multi.encode("c|a")[0], [1, 0, 1])
    np.testing.assert_array_equal(multi.encode(["b"])[0], [0, 1, 0])
    assert np.isnan(multi.encode(None)[0]).all() and multi.encode("a|zzz")[1] is not None
    assert multi.decode(np.array([[1, 0, 1]])) == [["a", "c"]]
    for e in (enc, ints, fixed, reg, multi):
        clone = LabelEncoder.from_state(json.loads(json.dumps(e.state_dict())))
        assert clone.classes == e.classes and clone.type == e.type
    assert LabelEncoder.from_state(json.loads(json.dumps(ints.state_dict()))).encode(10)[0] == 2
