"""Real broken files and manifests, for reliability tests and benchmarks.

``build_bad_manifest(directory)`` copies a few hundred real AV-MNIST rows (MFCC ``.npy``,
MNIST ``.png``) into ``directory``, adds a synthesized voice ``.wav`` per row and text /
tabular columns, then breaks about 1% of the rows, each in a different way (corrupt PNG
and JPEG, zero-byte and truncated WAV, a decompression-bomb PNG, a missing file, a path
that leaves the data root, a symlink out of it, NaN in an MFCC array, NaN / inf / text in
a numeric column, an empty text, a label never seen in training). Other rows are unusual
but valid (WAV at another sample rate or with two channels, an RGBA image, very long
text, unusual Unicode): they must be read, not reported. The returned ``BadManifest``
says exactly which (split, row, column) the data report must list.

``write_manifest_errors`` writes manifests that must stop a run: a missing column (in the
training or the validation manifest), the wrong delimiter, duplicated column names.

Every file is written here, from numpy, Pillow and soundfile; nothing is downloaded.
"""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Breakages planted by ``build_bad_manifest``: (kind, column, stage, text expected in the report's reason).
#: stage: "input" (the modality is unusable: policy applies), "imputed" (a number filled in), "label" (ignored label).
BREAKAGES: tuple[tuple[str, str, str, str], ...] = (
    ("corrupt png", "image", "input", "cannot decode image"),
    ("corrupt jpeg", "image", "input", "corrupt image"),
    ("decompression bomb", "image", "input", "decompression bomb"),
    ("missing file", "image", "input", "file not found"),
    ("path escapes root", "image", "input", "escapes the data root"),
    ("symlink out of root", "image", "input", "symlink points outside the data root"),
    ("zero-byte wav", "voice", "input", "empty file (0 bytes)"),
    ("truncated wav", "voice", "input", "truncated audio"),
    ("nan in array", "mfcc", "input", "NaN or infinite"),
    ("empty text", "text", "input", "empty value"),
    ("nan number", "weight", "imputed", "missing number"),
    ("infinite number", "weight", "imputed", "infinite value"),
    ("non-numeric", "weight", "imputed", "not a number"),
    ("unseen label", "label", "label", "not seen in training"),
)
#: Unusual rows that are valid: (kind, column). They must not appear in the data report.
UNUSUAL: tuple[tuple[str, str], ...] = (
    ("wav at 22050 Hz", "voice"),
    ("stereo wav", "voice"),
    ("rgba png", "image"),
    ("very long text", "text"),
    ("unusual unicode", "text"),
)

SAMPLE_RATE = 8000
VOICE_SECONDS = 0.25
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PENS = ("pencil", "ballpoint", "marker", "crayon")
UNICODE_TEXT = "Zahl ٣ — 三 𝟛 ｔｈｒｅｅ e\u0301\u0301 \u200b\u200d 👩🏽‍💻 \u202eesrever\u202c \ufeffBOM ǅ ß ﬁ Ω"
LONG_TEXT_CHARS = 200_000


# --------------------------------------------------------------------------- files


def voice(label: int, *, rate: int = SAMPLE_RATE, seconds: float = VOICE_SECONDS, channels: int = 1) -> np.ndarray:
    """A short tone whose pitch says the digit: float32 [S] (mono) or [S, C]."""
    t = np.arange(int(round(rate * seconds)), dtype=np.float64) / rate
    wave = 0.4 * np.sin(2 * np.pi * (220.0 + 60.0 * label) * t) * np.hanning(len(t))
    if channels == 1:
        return wave.astype(np.float32)
    return np.stack([wave * (1.0 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """16-bit PCM WAV of float samples in [-1, 1] ([S] or [S, C])."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, subtype="PCM_16", format="WAV")
    return path


def write_truncated_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """A WAV whose header declares every sample but whose data stops halfway (a copy cut short)."""
    buffer = io.BytesIO()
    import soundfile as sf

    sf.write(buffer, samples, rate, subtype="PCM_16", format="WAV")
    data = buffer.getvalue()
    path.write_bytes(data[: 44 + (len(data) - 44) // 2])
    return path


def write_corrupt_png(path: Path, source: Path) -> Path:
    """A real PNG's signature and header chunk followed by garbage where the pixel data was."""
    data = source.read_bytes()
    header = data[:33]  # signature (8) + IHDR chunk (25)
    rng = np.random.default_rng(len(data))
    path.write_bytes(header + rng.integers(0, 256, len(data) - 33, dtype=np.uint8).tobytes())
    return path


def write_corrupt_jpeg(path: Path, image: np.ndarray) -> Path:
    """A real JPEG of ``image`` with its entropy-coded data overwritten (start/end markers kept)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    data = bytearray(buffer.getvalue())
    start = data.find(b"\xff\xda")  # start of scan
    for i in range(start + 2, len(data) - 2):
        data[i] = 0xFF if i % 2 else 0xD9  # markers everywhere the image data was
    path.write_bytes(bytes(data))
    return path


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def write_bomb_png(path: Path, width: int = 20_000, height: int = 20_000) -> Path:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels: a few kB on disk, 400 MP decoded."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row * 1000) for _ in range(height // 1000)]
    parts.append(compressor.compress(row * (height % 1000)))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def write_rgba_png(path: Path, image: np.ndarray) -> Path:
    """A grayscale digit as an RGBA PNG with a transparent border (valid; converted to 1 channel)."""
    from PIL import Image

    rgba = np.zeros((*image.shape[:2], 4), dtype=np.uint8)
    rgba[..., :3] = image[..., None] if image.ndim == 2 else image[..., :3]
    rgba[..., 3] = 255
    rgba[:2, :, 3] = 0
    Image.fromarray(rgba, mode="RGBA").save(path)
    return path


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class ExpectedProblem:
    """One entry the data report must hold: where, what kind, and text its reason must contain."""

    split: str
    row: int
    column: str
    kind: str
    stage: str  # "input", "imputed" or "label"
    reason: str  # expected substring of the report's reason
    file: str | None = None  # the referenced file as written in the manifest (None: a cell value)


@dataclass
class BadManifest:
    """Train / valid manifests with planted problems, and what the data report must say about them."""

    root: Path
    train: Path
    valid: Path
    expected: list[ExpectedProblem]
    unusual: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # kind -> [(split, row)]
    columns: list[str] = field(default_factory=list)

    def expected_keys(self, stages: tuple[str, ...] = ("input", "imputed", "label")) -> set[tuple[str, int, str]]:
        """{(split, row, column)} of the expected problems of ``stages``."""
        return {(p.split, p.row, p.column) for p in self.expected if p.stage in stages}

    def first_input_problem(self) -> ExpectedProblem:
        """The problem a run with ``data.missing=error`` stops at: the first unusable input of train, in row order."""
        train = [p for p in self.expected if p.split == "train" and p.stage == "input"]
        return min(train, key=lambda p: p.row)

    def config(self, **sections: Any) -> dict[str, Any]:
        """A complete tiny config (fast encoders, dim 16, 1 epoch, 1 thread); ``sections`` update its top-level keys."""
        config: dict[str, Any] = {
            "name": "bad-inputs",
            "data": {
                "train": str(self.train),
                "valid": str(self.valid),
                "root": str(self.root),
                "split": {"valid": 0.0, "test": 0.0},
                "inputs": {
                    "image": {"kind": "image", "column": "image", "channels": 1, "size": [28, 28]},
                    "mfcc": {"kind": "sequence", "column": "mfcc", "max_length": 64},
                    "voice": {"kind": "audio", "column": "voice", "sample_rate": SAMPLE_RATE, "duration": VOICE_SECONDS},
                    "text": {"kind": "text", "column": "text", "vocab_size": 300, "max_length": 24},
                    "tabular": {"kind": "tabular", "numeric": ["weight"], "categorical": ["pen"]},
                },
                "batch_size": 64,
            },
            "model": {
                "dim": 16,
                "encoders": {
                    "image": {"name": "flatten", "downsample": 2},
                    "mfcc": "sequence_stats",
                    "voice": {"name": "audio_cnn", "n_mels": 16, "channels": [4, 8]},
                    "text": "bag_of_embeddings",
                    "tabular": "tabular_mlp",
                },
                "fusion": "concat",
            },
            "tasks": {"digit": {"column": "label", "type": "classification"}},
            # one torch thread: tiny models gain nothing from more, and lose a lot on a busy machine
            "train": {"epochs": 1, "progress": False, "seed": 0, "threads": 1},
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        return config

    def write_config(self, path: Path, **sections: Any) -> Path:
        import yaml

        path.write_text(yaml.safe_dump(self.config(**sections), sort_keys=False, allow_unicode=True), encoding="utf-8")
        return path


def avmnist_rows(train_rows: int, valid_rows: int) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """The first rows of AV-MNIST's train and valid manifests (columns id, audio, image, label) and its root."""
    import polyfuse.data  # noqa: F401  (registers the datasets)
    from polyfuse.registry import DATASETS

    prepared = DATASETS.get("avmnist").factory()
    train = pd.read_csv(prepared.train).iloc[:train_rows]
    valid = pd.read_csv(prepared.valid).iloc[:valid_rows]
    return train.reset_index(drop=True), valid.reset_index(drop=True), Path(prepared.root)


def build_bad_manifest(
    directory: str | Path, *, train_rows: int = 1200, valid_rows: int = 200, seed: int = 0
) -> BadManifest:
    """Copy real AV-MNIST rows under ``directory/data`` and plant one problem of each kind in BREAKAGES.

    ``directory/data`` is the data root; ``directory/outside`` holds a file that a path and a
    symlink try to reach from inside it. With the defaults about 1% of the 1400 rows are broken.
    The unseen label is in the validation manifest; every other breakage is split between the
    two manifests by position (deterministic for a ``seed``).
    """
    directory = Path(directory)
    root = directory / "data"
    outside = directory / "outside"
    for folder in (root / "image", root / "mfcc", root / "voice", outside):
        folder.mkdir(parents=True, exist_ok=True)
    train_src, valid_src, src_root = avmnist_rows(train_rows, valid_rows)
    rng = np.random.default_rng(seed)

    frames = {}
    for split, src in (("train", train_src), ("valid", valid_src)):
        rows = []
        for i, record in enumerate(src.to_dict("records")):
            label = int(record["label"])
            image = f"image/{split}-{i}.png"
            mfcc = f"mfcc/{split}-{i}.npy"
            wav = f"voice/{split}-{i}.wav"
            shutil.copyfile(src_root / record["image"], root / image)
            shutil.copyfile(src_root / record["audio"], root / mfcc)
            write_wav(root / wav, voice(label))
            rows.append(
                {
                    "id": f"{split}-{record['id']}",
                    "mfcc": mfcc,
                    "image": image,
                    "voice": wav,
                    "text": f"a handwritten {WORDS[label] if rng.random() < 0.7 else WORDS[int(rng.integers(10))]} "
                            f"drawn with a {PENS[int(rng.integers(len(PENS)))]}",
                    "weight": f"{rng.normal(3.0 + 0.1 * label, 1.0):.3f}",
                    "pen": PENS[int(rng.integers(len(PENS)))],
                    "label": str(label),
                }
            )
        frames[split] = rows

    secret = outside / "secret.png"
    shutil.copyfile(root / "image/train-0.png", secret)
    expected: list[ExpectedProblem] = []
    unusual: dict[str, list[tuple[str, int]]] = {}
    # spread the planted rows over each manifest, away from row 0 (fit samples start there)
    slots = {s: list(rng.permutation(np.arange(1, len(frames[s])))) for s in frames}

    def take(split: str) -> tuple[int, dict[str, Any]]:
        row = int(slots[split].pop())
        return row, frames[split][row]

    for n, (kind, column, stage, reason) in enumerate(BREAKAGES):
        split = "valid" if kind == "unseen label" or n % 4 == 3 else "train"
        row, record = take(split)
        file: str | None = None
        if kind == "corrupt png":
            write_corrupt_png(root / record["image"], root / record["image"])
            file = record["image"]
        elif kind == "corrupt jpeg":
            file = f"image/{split}-{row}.jpg"
            write_corrupt_jpeg(root / file, _gray(root / record["image"]))
        elif kind == "decompression bomb":
            file = f"image/{split}-{row}-bomb.png"
            write_bomb_png(root / file)
        elif kind == "missing file":
            file = f"image/{split}-{row}-gone.png"
        elif kind == "path escapes root":
            file = "../outside/secret.png"
        elif kind == "symlink out of root":
            file = f"image/{split}-{row}-link.png"
            (root / file).unlink(missing_ok=True)
            (root / file).symlink_to(secret)
        elif kind == "zero-byte wav":
            (root / record["voice"]).write_bytes(b"")
            file = record["voice"]
        elif kind == "truncated wav":
            write_truncated_wav(root / record["voice"], voice(int(record["label"])))
            file = record["voice"]
        elif kind == "nan in array":
            array = np.load(root / record["mfcc"])
            array[len(array) // 2, 3] = np.nan
            np.save(root / record["mfcc"], array)
            file = record["mfcc"]
        elif kind == "empty text":
            record["text"] = ""
        elif kind == "nan number":
            record["weight"] = "NaN"
        elif kind == "infinite number":
            record["weight"] = "inf"
        elif kind == "non-numeric":
            record["weight"] = "heavy-ish"
        elif kind == "unseen label":
            record["label"] = "11"
        if file is not None:
            record[column] = file
        expected.append(ExpectedProblem(split, row, column, kind, stage, reason, file))

    for kind, column in UNUSUAL:
        split = "train" if kind != "stereo wav" else "valid"
        row, record = take(split)
        label = int(record["label"])
        if kind == "wav at 22050 Hz":
            write_wav(root / record["voice"], voice(label, rate=22050), rate=22050)
        elif kind == "stereo wav":
            write_wav(root / record["voice"], voice(label, channels=2))
        elif kind == "rgba png":
            write_rgba_png(root / record["image"], _gray(root / record["image"]))
        elif kind == "very long text":
            record["text"] = (record["text"] + " ") * (LONG_TEXT_CHARS // (len(record["text"]) + 1))
        elif kind == "unusual unicode":
            record["text"] = UNICODE_TEXT
        unusual.setdefault(kind, []).append((split, row))

    columns = ["id", "mfcc", "image", "voice", "text", "weight", "pen", "label"]
    paths = {}
    for split, rows in frames.items():
        paths[split] = root / f"{split}.csv"
        pd.DataFrame(rows, columns=columns).to_csv(paths[split], index=False)
    return BadManifest(root, paths["train"], paths["valid"], expected, unusual, columns)


def _gray(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.array(image.convert("L"))


@dataclass(frozen=True)
class ManifestError:
    """A manifest that must stop a run: the error must name ``file`` and ``column``."""

    train: Path
    valid: Path
    file: Path  # the manifest the message must name
    column: str  # the column the message must name
    message: str  # expected substring of the message


def write_manifest_errors(directory: str | Path, source: BadManifest) -> dict[str, ManifestError]:
    """Broken copies of ``source``'s manifests (same data root): each must stop a run with a clear error."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    train = pd.read_csv(source.train, dtype=str, keep_default_na=False)
    valid = pd.read_csv(source.valid, dtype=str, keep_default_na=False)
    out: dict[str, ManifestError] = {}

    path = directory / "train-missing-column.csv"
    train.drop(columns=["voice"]).to_csv(path, index=False)
    out["missing column"] = ManifestError(path, source.valid, path, "voice", "not in the manifest")

    path = directory / "valid-missing-column.csv"
    valid.drop(columns=["image"]).to_csv(path, index=False)
    out["missing column in valid"] = ManifestError(source.train, path, path, "image", "not in the manifest")

    path = directory / "train-semicolons.csv"
    train.to_csv(path, index=False, sep=";")
    out["wrong delimiter"] = ManifestError(path, source.valid, path, ";".join(train.columns), "semicolon-separated")

    path = directory / "train-duplicated.csv"
    duplicated = train.copy()
    duplicated.insert(len(duplicated.columns), "text_copy", duplicated["text"])
    text = duplicated.to_csv(index=False).replace("text_copy", "text", 1)
    path.write_text(text, encoding="utf-8")
    out["duplicated column"] = ManifestError(path, source.valid, path, "text", "duplicated column names")
    return out


__all__ = [
    "BREAKAGES", "UNUSUAL", "BadManifest", "ExpectedProblem", "ManifestError", "build_bad_manifest",
    "write_manifest_errors", "voice", "write_wav", "write_truncated_wav", "write_corrupt_png", "write_corrupt_jpeg",
    "write_bomb_png", "write_rgba_png", "avmnist_rows",
]
