"""easy-VQA: generated 64x64 images of one coloured shape, with questions about them.

Source: ``easy-vqa==1.0`` (``easy_vqa/data/``: ``{train,test}/images/<id>.png``,
``{train,test}/questions.json`` as ``[question, answer, image_id]``, ``answers.txt`` with
13 answers). The manifests point at the package's own image files (``root`` is the data
folder, nothing is copied). The validation split is 10% of the train IMAGES (seed 0), so
the questions about one image never straddle train and valid. ``image_id`` is made unique
across the package's two folders: ``train-17``, ``test-17``.

``easy-vqa``: one row per question (``image, question, answer, image_id``);
4000 train images become 3600 train + 400 valid, the 1000 test images stay test.

``easy-vqa-captions``: one row per image (``image, caption, image_id``) with the caption
``"a <colour> <shape>"`` read off that image's answers (``what color is the shape?`` ->
colour, ``what shape is ...?`` -> shape, ``what is the blue shape?`` -> both, and true
yes/no questions such as ``is there a red shape?`` -> yes). About 12% of the images
have no question that tells their colour or shape; for those the missing part is read
off the pixels: the colour is the generator's palette colour (``COLOUR_RGB``) covering
the most pixels, the shape follows from how much of its bounding box the shape fills
(rectangle ~1.0, circle ~0.8, triangle ~0.55).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polyfuse.data.datasets.base import (
    DatasetInfo,
    PackageFile,
    PreparedDataset,
    build_once,
    cache_dir_name,
    register_dataset,
    with_counts,
)
from PIL import Image

from polyfuse.errors import DataError

VERSION = "v1"
SEED = 0
VALID_FRACTION = 0.1
ANSWERS_FILE = PackageFile("easy-vqa", "1.0", "easy_vqa/data/answers.txt")

SHAPES = ("circle", "rectangle", "triangle")
COLOURS = ("red", "green", "blue", "black", "gray", "teal", "yellow", "brown")
_NEGATED = re.compile(r"\bnot\b|\bno\b")
#: The fill colours of easy-VQA's generator (every shape is one exact colour).
COLOUR_RGB = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "teal": (0, 128, 128),
    "brown": (165, 42, 42),
    "yellow": (255, 255, 0),
}
#: Fraction of its bounding box a shape fills: rectangle 1.0 (exact colour pixels; measured
#: >= 0.99), circle 0.73-0.90 > triangle 0.51-0.67 (with antialiased edge pixels).
RECTANGLE_FILL, CIRCLE_FILL = 0.97, 0.70

INFO = DatasetInfo(
    name="easy-vqa",
    description="Visual question answering on generated shapes (image + question -> 13 answers)",
    license="MIT",
    source=ANSWERS_FILE.hint,
    modalities=["image", "text"],
    tasks=["answer"],
    size="5000 images, 48k questions, 3 MB",
)
CAPTIONS_INFO = DatasetInfo(
    name="easy-vqa-captions",
    description="easy-VQA images with a colour + shape caption each (captioning / retrieval)",
    license="MIT",
    source=ANSWERS_FILE.hint,
    modalities=["image", "text"],
    tasks=[],
    size="5000 images, 3 MB",
)


def data_root(source: Path | None) -> Path:
    """The easy-VQA data folder (holding answers.txt, train/ and test/)."""
    return ANSWERS_FILE.locate(source).parent


def read_questions(root: Path, folder: str) -> pd.DataFrame:
    """``questions.json`` of ``folder`` (train/test) as rows: image, question, answer, image_id, source_id."""
    path = root / folder / "questions.json"
    try:
        items = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable questions file ({exc})", file=str(path)) from None
    for i, item in enumerate(items):
        if not (isinstance(item, list) and len(item) == 3):
            raise DataError("expected [question, answer, image_id]", file=str(path), row=i)
    table = pd.DataFrame(items, columns=["question", "answer", "source_id"])
    table["source_id"] = table["source_id"].astype(np.int64)
    table["image"] = [f"{folder}/images/{i}.png" for i in table["source_id"]]
    table["image_id"] = [f"{folder}-{i}" for i in table["source_id"]]
    missing = [p for p in table["image"].unique() if not (root / p).is_file()]
    if missing:
        raise DataError(f"{len(missing)} images referenced by the questions are missing", file=str(root / missing[0]))
    return table


def read_answers(root: Path) -> list[str]:
    return [a.strip() for a in (root / "answers.txt").read_text().splitlines() if a.strip()]


def split_questions(root: Path) -> dict[str, pd.DataFrame]:
    """train / valid (10% of the train images, seed 0) / test question tables."""
    train = read_questions(root, "train")
    images = np.unique(train["source_id"].to_numpy())
    rng = np.random.default_rng(SEED)
    valid_images = rng.choice(images, size=int(round(VALID_FRACTION * len(images))), replace=False)
    in_valid = train["source_id"].isin(valid_images).to_numpy()
    return {
        "train": train[~in_valid].reset_index(drop=True),
        "valid": train[in_valid].reset_index(drop=True),
        "test": read_questions(root, "test"),
    }


def _box_fill(mask: np.ndarray) -> float:
    """Fraction of the bounding box of ``mask`` [H, W] that is True (0 when empty)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return 0.0
    return float(mask.sum() / ((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)))


def look_at(path: Path) -> tuple[str, str]:
    """(colour, shape) of an easy-VQA image, read off its pixels."""
    try:
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)  # [H, W, 3]
    except OSError as exc:
        raise DataError(f"unreadable image ({exc})", file=str(path)) from None
    exact = {name: (pixels == rgb).all(axis=-1) for name, rgb in COLOUR_RGB.items()}  # name -> [H, W]
    colour = max(exact, key=lambda name: int(exact[name].sum()))
    if not exact[colour].any():
        raise DataError("no shape of a known colour in the image", file=str(path))
    if _box_fill(exact[colour]) >= RECTANGLE_FILL:  # rectangles have no antialiased edge
        return colour, "rectangle"
    packed = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]  # [H, W]
    values, counts = np.unique(packed, return_counts=True)
    top = values[np.argmax(counts)]
    background = np.array([(top >> 16) & 255, (top >> 8) & 255, top & 255])
    ink = np.abs(pixels - background).sum(axis=-1) > 60  # shape pixels incl. antialiased edges
    return colour, "circle" if _box_fill(ink) >= CIRCLE_FILL else "triangle"


def answered_parts(questions: list[str], answers: list[str]) -> tuple[str | None, str | None]:
    """(colour, shape) as told by one image's questions and answers; None where none tells."""
    shape = colour = None
    for question, answer in zip(questions, answers):
        q = question.lower()
        said_shapes = [s for s in SHAPES if re.search(rf"\b{s}\b", q)]
        said_colours = [c for c in COLOURS if re.search(rf"\b{c}\b", q)]
        if answer in SHAPES:
            shape = answer
            colour = colour or (said_colours[0] if said_colours else None)  # "what is the blue shape?"
        elif answer in COLOURS:
            colour = answer
            shape = shape or (said_shapes[0] if said_shapes else None)  # "what color is the circle?"
        elif answer in ("yes", "no") and (answer == "yes") != bool(_NEGATED.search(q)):
            shape = shape or (said_shapes[0] if said_shapes else None)
            colour = colour or (said_colours[0] if said_colours else None)
    return colour, shape


def caption_of(questions: list[str], answers: list[str], image: Path | None = None) -> str:
    """``"a <colour> <shape>"`` from one image's answers; a part they do not tell is read off ``image``."""
    colour, shape = answered_parts(questions, answers)
    if (colour is None or shape is None) and image is not None:
        seen_colour, seen_shape = look_at(image)
        colour, shape = colour or seen_colour, shape or seen_shape
    return " ".join(w for w in ("a", colour, shape or "shape") if w)


def captions(questions: pd.DataFrame, root: Path) -> pd.DataFrame:
    """One row per image of a question table: image, caption, image_id."""
    rows = []
    for (image_id, image), group in questions.groupby(["image_id", "image"], sort=False):
        rows.append(
            {
                "image": image,
                "caption": caption_of(group["question"].tolist(), group["answer"].tolist(), root / image),
                "image_id": image_id,
                "source_id": int(group["source_id"].iloc[0]),
            }
        )
    table = pd.DataFrame(rows).sort_values("source_id", kind="stable")
    return table[["image", "caption", "image_id"]].reset_index(drop=True)


def _build_questions(out: Path, root: Path) -> dict[str, Any]:
    answers = read_answers(root)
    counts = {}
    for split, table in split_questions(root).items():
        unknown = sorted(set(table["answer"]) - set(answers))
        if unknown:
            raise DataError(f"answers not in answers.txt: {unknown[:5]}", file=str(root / "answers.txt"))
        table[["image", "question", "answer", "image_id"]].to_csv(out / f"{split}.csv", index=False)
        counts[split] = len(table)
    return {"counts": counts, "details": {"answers": answers}}


def _build_captions(out: Path, root: Path) -> dict[str, Any]:
    counts = {}
    for split, table in split_questions(root).items():
        caps = captions(table, root)
        caps.to_csv(out / f"{split}.csv", index=False)
        counts[split] = len(caps)
    return {"counts": counts}


def _prepared(name: str, directory: Path, root: Path, meta: dict[str, Any], info: DatasetInfo,
              inputs: dict[str, dict], tasks: dict[str, dict]) -> PreparedDataset:
    return PreparedDataset(
        name=name,
        train=directory / "train.csv",
        valid=directory / "valid.csv",
        test=directory / "test.csv",
        root=root,
        inputs=inputs,
        tasks=tasks,
        info=with_counts(info, meta["counts"]),
        details=dict(meta.get("details", {})),
    )


def _image_input() -> dict[str, Any]:
    return {"kind": "image", "column": "image", "channels": 3, "size": [64, 64]}


@register_dataset("easy-vqa", INFO, VERSION, [ANSWERS_FILE])
def prepare_easy_vqa(cache: Path | None = None, source: str | Path | None = None) -> PreparedDataset:
    """Generated shapes + questions -> one of 13 answers (yes/no, colour, shape)."""
    src = Path(source) if source is not None else None
    root = data_root(src)
    dirname = cache_dir_name("easy-vqa", VERSION, None, src)
    directory, meta = build_once(dirname, lambda out: _build_questions(out, root), cache)
    inputs = {"image": _image_input(), "question": {"kind": "text", "column": "question"}}
    tasks = {"answer": {"column": "answer", "type": "classification"}}
    return _prepared("easy-vqa", directory, root, meta, INFO, inputs, tasks)


@register_dataset("easy-vqa-captions", CAPTIONS_INFO, VERSION, [ANSWERS_FILE])
def prepare_easy_vqa_captions(cache: Path | None = None, source: str | Path | None = None) -> PreparedDataset:
    """easy-VQA images with a "a <colour> <shape>" caption each (no task: retrieval / captioning)."""
    src = Path(source) if source is not None else None
    root = data_root(src)
    dirname = cache_dir_name("easy-vqa-captions", VERSION, None, src)
    directory, meta = build_once(dirname, lambda out: _build_captions(out, root), cache)
    inputs = {"image": _image_input(), "caption": {"kind": "text", "column": "caption"}}
    return _prepared("easy-vqa-captions", directory, root, meta, CAPTIONS_INFO, inputs, {})
