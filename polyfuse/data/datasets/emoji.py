"""Emoji: every single-codepoint emoji of the Noto Color Emoji font, rendered, with its Unicode name.

Source: Debian ``fonts-noto-color-emoji`` (``NotoColorEmoji.ttf``). The font's character
map (read with fontTools) lists its codepoints; those with a Unicode name (Python's
``unicodedata``), outside ASCII and not format/control/mark characters, are drawn with
Pillow (``ImageFont.truetype(path, 109)``, ``embedded_color=True``) on a white RGB
canvas; blank renders are skipped. Each drawing is cropped to its content, centred on a
white square and resized to ``size`` x ``size`` (default 64) PNG. Text:
``unicodedata.name(ch).lower()``. Split 80/20 train/test (seed 0), then 10% of train
becomes valid. Columns: ``image, name, codepoint`` (``U+1F600``). No task: image-text
retrieval.
"""

from __future__ import annotations

import shutil
import subprocess
import unicodedata
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from polyfuse.errors import ConfigError, MissingPackageError
from polyfuse.data.datasets.base import (
    DatasetInfo,
    PreparedDataset,
    SystemFile,
    build_once,
    cache_dir_name,
    random_split,
    register_dataset,
    split_sizes,
    with_counts,
)
from polyfuse.errors import DataError

VERSION = "v1"
SEED = 0
FONT_SIZE = 109  # the only size of the font's colour bitmaps
CANVAS = 160  # px, holds one 136x128 glyph bitmap
SKIPPED_CATEGORIES = {"Cc", "Cf", "Cn", "Co", "Cs", "Mn", "Me", "Zs", "Zl", "Zp"}
FONT_NAME = "NotoColorEmoji.ttf"


def _fontconfig_lookup() -> Path | None:
    """Ask fontconfig (``fc-list``) where the Noto Color Emoji font is."""
    if shutil.which("fc-list") is None:
        return None
    try:
        listing = subprocess.run(
            ["fc-list", ":", "file", "family"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in listing.splitlines():
        file, _, family = line.partition(":")
        if "Noto Color Emoji" in family and file.strip().lower().endswith((".ttf", ".otf")):
            return Path(file.strip())
    return None


FONT_FILE = SystemFile(
    candidates=(
        "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
        "/usr/share/fonts/noto/NotoColorEmoji.ttf",
        "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",
        "/usr/share/fonts/noto-emoji/NotoColorEmoji.ttf",
        "/usr/share/fonts/TTF/NotoColorEmoji.ttf",
        "/usr/local/share/fonts/NotoColorEmoji.ttf",
        "~/.local/share/fonts/NotoColorEmoji.ttf",
        "~/.fonts/NotoColorEmoji.ttf",
    ),
    hint="apt-get install fonts-noto-color-emoji",
    local=FONT_NAME,
    finder=_fontconfig_lookup,
)

def font_path() -> Path | None:
    """Where the Noto Color Emoji font is (the known paths above, then fontconfig); None when it is not installed.

    The one lookup: the dataset, the tests and ``make fonts`` all ask this function.
    """
    try:
        return FONT_FILE.locate()
    except MissingPackageError:
        return None


INFO = DatasetInfo(
    name="emoji",
    description="Noto Color Emoji renderings with their Unicode names (image-text retrieval)",
    license="OFL-1.1",
    source=FONT_FILE.hint,
    modalities=["image", "text"],
    tasks=[],
    size="~1400 images, ~5 MB",
)


def candidate_codepoints(font_path: Path) -> list[int]:
    """Codepoints of the font's character map that have a Unicode name and can stand alone."""
    from fontTools.ttLib import TTFont  # a dependency of matplotlib

    try:
        font = TTFont(str(font_path), lazy=True)
        cmap = font.getBestCmap() or {}
        font.close()
    except Exception as exc:  # fontTools raises many kinds on a broken file
        raise DataError(f"unreadable font ({exc})", file=str(font_path)) from None
    keep = []
    for code in sorted(cmap):
        char = chr(code)
        if code < 0x80 or not unicodedata.name(char, "") or unicodedata.category(char) in SKIPPED_CATEGORIES:
            continue
        keep.append(code)
    return keep


def render(font: ImageFont.FreeTypeFont, char: str, size: int) -> Image.Image | None:
    """``char`` drawn in colour, cropped to its content, centred on a white square of ``size``; None if blank."""
    canvas = Image.new("RGB", (CANVAS, CANVAS), "white")
    ImageDraw.Draw(canvas).text((0, 0), char, font=font, embedded_color=True)
    ink = (np.asarray(canvas) < 250).any(axis=-1)  # [H, W] True where not white
    if ink.sum() < 20:
        return None
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    box = canvas.crop((cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))
    side = max(box.size) + 4  # 2 px white margin
    square = Image.new("RGB", (side, side), "white")
    square.paste(box, ((side - box.width) // 2, (side - box.height) // 2))
    return square.resize((size, size), Image.Resampling.LANCZOS)


def rendered(font_path: Path, size: int) -> Iterator[tuple[int, Image.Image]]:
    """(codepoint, image) for every emoji the font really draws."""
    try:
        font = ImageFont.truetype(str(font_path), FONT_SIZE)
    except OSError as exc:
        raise DataError(f"Pillow cannot open the font at size {FONT_SIZE} ({exc})", file=str(font_path)) from None
    for code in candidate_codepoints(font_path):
        image = render(font, chr(code), size)
        if image is not None:
            yield code, image


def _build(out: Path, font_path: Path, size: int) -> dict[str, Any]:
    (out / "images").mkdir()
    rows = []
    for code, image in rendered(font_path, size):
        name = f"images/{code:05x}.png"
        image.save(out / name)
        rows.append({"image": name, "name": unicodedata.name(chr(code)).lower(), "codepoint": f"U+{code:04X}"})
    if not rows:
        raise DataError("the font drew no emoji (is it a colour emoji font?)", file=str(font_path))
    table = pd.DataFrame(rows)
    rest, test = random_split(len(table), (0.8, 0.2), SEED)
    n_valid = split_sizes(len(rest), (0.1, 0.9))[0]
    order = np.random.default_rng(SEED + 1).permutation(rest)
    parts = {"train": np.sort(order[n_valid:]), "valid": np.sort(order[:n_valid]), "test": test}
    counts = {}
    for split, idx in parts.items():
        table.iloc[idx].to_csv(out / f"{split}.csv", index=False)
        counts[split] = len(idx)
    return {"counts": counts, "details": {"font": str(font_path), "size": size}}


@register_dataset("emoji", INFO, VERSION, [FONT_FILE])
def prepare_emoji(cache: Path | None = None, source: str | Path | None = None, size: int = 64) -> PreparedDataset:
    """Noto Color Emoji images + Unicode names (image-text retrieval, no task)."""
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 512:
        raise ConfigError(f"data.dataset_options.size: expected an integer in [8, 512], got {size!r}")
    src = Path(source) if source is not None else None
    options = {"size": size} if size != 64 else {}
    dirname = cache_dir_name("emoji", VERSION, options, src)
    directory, meta = build_once(dirname, lambda out: _build(out, FONT_FILE.locate(src), size), cache)
    return PreparedDataset(
        name="emoji",
        train=directory / "train.csv",
        valid=directory / "valid.csv",
        test=directory / "test.csv",
        root=directory,
        inputs={
            "image": {"kind": "image", "column": "image", "channels": 3, "size": [size, size]},
            "name": {"kind": "text", "column": "name"},
        },
        tasks={},
        info=with_counts(INFO, meta["counts"]),
        details=dict(meta.get("details", {})),
    )

