"""`polyfuse index build` + `polyfuse search` end to end on a real audio<->image contrastive run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from polyfuse.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, avmnist) -> Path:  # noqa: ANN001
    from polyfuse.api import fit

    work = tmp_path_factory.mktemp("index")
    fit("avmnist-contrastive", out=work / "run", progress=False,
        overrides=["data.max_rows=600", "model.dim=32", "objectives.clip.dim=32", "train.epochs=6"])
    res = runner.invoke(app, ["index", "build", str(work / "run"), "--data", str(avmnist.test), "--out", str(work / "idx"), "--json"])
    assert res.exit_code == 0, res.output
    described = json.loads(res.stdout)
    assert described["rows"] == 600 and described["problems"] == 0
    assert described["inputs"]["audio"]["count"] == described["inputs"]["image"]["count"] == 600
    return work / "idx"


def _search(index: Path, *args: str) -> list[dict]:
    res = runner.invoke(app, ["search", str(index), *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_index_holds_embeddings_and_row_metadata(index: Path, avmnist) -> None:  # noqa: ANN001
    rows = pd.read_parquet(index / "rows.parquet")
    test = pd.read_csv(avmnist.test)
    assert list(rows["label"]) == list(test["label"]) and list(rows["image"]) == list(test["image"])
    tensors = load_file(str(index / "embeddings.safetensors"))
    shapes = {name: t.shape for name, t in tensors.items()}
    assert any(s == (600, 32) for s in shapes.values()), shapes


def test_a_spoken_digit_finds_images_of_that_digit(index: Path, avmnist) -> None:  # noqa: ANN001
    test = pd.read_csv(avmnist.test)
    hits = total = 0
    for i in range(20):
        found = _search(index, "--sequence", str(avmnist.root / test["audio"][i]), "-k", "5")
        assert [r["rank"] for r in found] == [1, 2, 3, 4, 5]
        scores = [r["score"] for r in found]
        assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
        hits += sum(r["label"] == test["label"][i] for r in found)
        total += len(found)
    assert hits / total > 0.3, hits / total  # chance: 0.1


def test_an_image_query_ranks_audio_rows(index: Path, avmnist) -> None:  # noqa: ANN001
    test = pd.read_csv(avmnist.test)
    found = _search(index, "--image", str(avmnist.root / test["image"][1]), "-k", "3")
    assert len(found) == 3 and {"audio", "image", "label", "score", "row"} <= set(found[0])


def test_query_mistakes_are_one_line(index: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["search", str(index), "--text", "five"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    res = runner.invoke(app, ["search", str(tmp_path / "nope"), "--text", "five"])
    assert res.exit_code == 2 and "nope" in res.output
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    res = runner.invoke(app, ["search", str(index), "--image", str(broken)])
    assert res.exit_code == 2 and "broken.png" in res.output


# --------------------------------------------------------------------------- text search on the emoji index


@pytest.fixture(scope="module")
def emoji_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A short image<->name contrastive run on frozen cached embeddings, its test split indexed."""
    from conftest import emoji_font_or_skip
    from polyfuse.api import fit
    from polyfuse.data.datasets import prepare_dataset

    emoji_font_or_skip()
    work = tmp_path_factory.mktemp("emoji-index")
    fit("emoji-retrieval", out=work / "run", progress=False, overrides=[
        "data.dataset_options.size=64", "data.inputs.image={kind: image, column: image, channels: 3, size: [64, 64]}",
        "data.inputs.name={kind: text, column: name, tokenizer: minilm, max_length: 16}",
        "model.encoders.image={name: pretrained_image_embedding, dim: null}",
        "model.encoders.name={name: pretrained_text_embedding, dim: null}",
        "objectives.clip.dim=64", "objectives.clip.hidden=0", "train.epochs=30", "data.max_rows=300",
        "train.feature_cache=memory", "train.threads=2",
    ])
    test = prepare_dataset("emoji", size=64).splits()["test"]
    res = runner.invoke(app, ["index", "build", str(work / "run"), "--data", str(test), "--out", str(work / "idx")])
    assert res.exit_code == 0, res.output
    return work / "idx", pd.read_parquet(test) if str(test).endswith(".parquet") else pd.read_csv(test)


def test_a_name_query_finds_its_own_emoji_far_above_chance(emoji_index: tuple[Path, pd.DataFrame]) -> None:
    from polyfuse.retrieval.index import SearchIndex

    index_dir, test = emoji_index
    name = str(test["name"][0])
    found = _search(index_dir, "--text", name, "-k", "10")  # the CLI, as the README shows it
    assert len(found) == 10 and {"image", "name", "score", "rank"} <= set(found[0])
    index = SearchIndex.load(index_dir)
    queries = list(test["name"][:60])
    hits = sum(any(r["name"] == q for r in index.search(q, kind="text", k=10)) for q in queries)
    chance = 10 / len(test)  # 278 test emoji: 0.036
    assert hits / len(queries) > 3 * chance, (hits, len(queries))  # measured 0.26 text->image recall@10
