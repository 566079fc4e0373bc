"""Read the files a manifest names: images, audio, numeric arrays, video. Numpy only, no torch.

Every reader takes a path or the file's bytes and raises ``DataError(reason)`` on a file
it cannot use (zero bytes, truncated, corrupt, refused); the caller adds file/row/column.
``probe_file`` checks a file quickly (headers, cheap decodes) for schema inference and
``polyfuse data inspect``.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import warnings
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any, Iterator

import numpy as np

from polyfuse.errors import DataError
from polyfuse.data.file_checks import check_pixels as _check_pixels
from polyfuse.data.file_checks import check_video_pixels as _check_video_pixels
from polyfuse.data.file_checks import file_handle as _handle
from polyfuse.data.file_checks import suffix_of as _suffix


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif")
ARRAY_SUFFIXES = (".npy", ".npz", ".csv", ".txt")
#: ``.gif`` is an image or a video (animated); containers (``.mp4 .m4v .mov .mkv .webm .avi``)
#: are decoded with PyAV (polyfuse.data.video_files, ``pip install polyfuse[video]``).
VIDEO_SUFFIXES = (".gif", ".apng", ".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm")

DEFAULT_MAX_PIXELS = 50_000_000
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_HIGH_BIT_GRAY = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, as Pillow's "L"
_STREAMING_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)  # WAV data sizes written by streaming encoders
_ESTIMATED_LENGTH_FORMATS = ("OGG", "MPEG")  # their frame count in the header may be an estimate



# --------------------------------------------------------------------------- images


def read_image(
    source: Path | bytes,
    *,
    channels: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    size: tuple[int, int] | None = None,
    crop: bool = False,
) -> np.ndarray:
    """An image as uint8 [H, W, C] (C = ``channels``; None = 1 for grayscale files, else 3).

    Pillow formats (EXIF orientation applied, transparency composited on white) or a
    ``.npy`` array [H, W] / [H, W, C] (returned as float32). Images with more than
    ``max_pixels`` pixels are refused from their header, before decoding.

    ``size`` (H, W): 8-bit images are brought to it while still Pillow images (after a centred
    crop to its aspect ratio when ``crop``; bilinear, antialiased), the same pixels as resizing
    the returned array with Pillow; ``.npy`` and 16-bit / float images come back at their own size.
    """
    _check_channels(channels)
    if _is_npy(source):
        array = _load_npy(source)
        if array.ndim not in (2, 3):
            raise DataError(f"expected an image array [H, W] or [H, W, C], got shape {tuple(array.shape)}")
        array = _finite_float32(array if array.ndim == 3 else array[..., None])
        _check_pixels(array.shape[1], array.shape[0], max_pixels)
        return _convert_channels(array, channels)
    from PIL import Image, ImageOps

    handle = _file_handle(source)
    try:
        with _pillow_guard(), Image.open(handle) as image:
            _check_pixels(*image.size, max_pixels)
            image.load()
            if may_be_oriented(image):
                ImageOps.exif_transpose(image, in_place=True)
            converted = _pil_converted(image, channels)
            if converted is None:
                return _pil_to_array(image, channels)
            if size is not None:
                converted = _pil_resized(converted, size, crop)
            array = np.array(converted, dtype=np.uint8)
            return array[..., None] if array.ndim == 2 else array
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"image refused as a possible decompression bomb ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure means an unreadable file
        raise DataError(_decode_reason("image", exc)) from None


#: ``Image.info`` keys from which Pillow's ``getexif`` reads an orientation (EXIF, PNG's raw profile, XMP).
_ORIENTATION_SOURCES = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")


def may_be_oriented(image: Any) -> bool:
    """Whether a loaded Pillow image carries metadata that can hold an EXIF orientation (the sources
    Pillow's ``getexif`` reads, TIFF tags included); without any, ``exif_transpose`` would do nothing,
    and skipping it saves parsing per file."""
    return hasattr(image, "tag_v2") or any(key in image.info for key in _ORIENTATION_SOURCES)


def _pil_to_array(image: Any, channels: int | None) -> np.ndarray:
    """Pillow image -> uint8 [H, W, C]."""
    if image.mode in _HIGH_BIT_GRAY:
        gray = _high_bit_to_uint8(np.asarray(image), image.mode)[..., None]
        return gray if (channels or 1) == 1 else np.repeat(gray, 3, axis=2)
    converted = _pil_converted(image, channels)
    assert converted is not None
    array = np.array(converted, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def _pil_converted(image: Any, channels: int | None) -> Any:
    """An 8-bit Pillow image as mode ``L`` (1 channel) or ``RGB``; None for 16-bit / float grayscale."""
    from PIL import Image

    if image.mode in _HIGH_BIT_GRAY:
        return None
    gray_like = image.mode in ("1", "L", "LA", "La")
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    mode = "L" if (channels or (1 if gray_like else 3)) == 1 else "RGB"
    return image if image.mode == mode else image.convert(mode)


def crop_box(height: int, width: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the largest centred region with the aspect ratio of ``size`` = (H, W)."""
    target = size[1] / size[0]
    if width / height > target:
        new_w = max(1, int(round(height * target)))
        left = (width - new_w) // 2
        return 0, left, height, left + new_w
    new_h = max(1, int(round(width / target)))
    top = (height - new_h) // 2
    return top, 0, top + new_h, width


def _pil_resized(image: Any, size: tuple[int, int], crop: bool) -> Any:
    """An ``L``/``RGB`` Pillow image cropped (centred, to the aspect of ``size``) when ``crop``, then resized."""
    from PIL import Image

    if crop:
        top, left, bottom, right = crop_box(image.height, image.width, size)
        if (top, left, bottom, right) != (0, 0, image.height, image.width):
            image = image.crop((left, top, right, bottom))
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return image


def _high_bit_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """16/32-bit integer or float grayscale -> uint8 (16-bit scaled by 1/257; floats in [0, 1] by 255)."""
    values = array.astype(np.float64)
    if mode == "F":
        values = values * 255.0 if np.nanmax(values, initial=0.0) <= 1.0 else values
    elif values.max(initial=0) > 255:
        values = values / 257.0
    return np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8)


# --------------------------------------------------------------------------- audio


def read_audio(source: Path | bytes, *, sample_rate: int, mono: bool = True) -> np.ndarray:
    """Audio as float32 in [-1, 1] at ``sample_rate``: [S] when ``mono`` (channels averaged), else [C, S].

    WAV/FLAC/OGG/MP3 through soundfile; resampled with a polyphase filter when the
    file's rate differs. Truncated, corrupt, empty or non-finite audio raises DataError.
    """
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    data, rate = _decode_audio(source)
    signal = data.mean(axis=1) if mono else data.T  # [S] or [C, S]
    if rate != sample_rate:
        from scipy.signal import resample_poly

        gcd = math.gcd(rate, sample_rate)
        signal = resample_poly(signal, sample_rate // gcd, rate // gcd, axis=-1)
    return np.clip(signal, -1.0, 1.0).astype(np.float32)


def _decode_audio(source: Path | bytes) -> tuple[np.ndarray, int]:
    """All samples as float32 [S, C] and the file's sample rate; DataError when unusable."""
    import soundfile as sf

    handle = _handle(source)
    try:
        with sf.SoundFile(handle) as audio:
            declared, rate, log, container = audio.frames, audio.samplerate, audio.extra_info, audio.format
            data = audio.read(dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile errors, bad headers
        raise DataError(_decode_reason("audio", exc)) from None
    _check_wav_truncation(log)
    if len(data) < declared and container not in _ESTIMATED_LENGTH_FORMATS:
        raise DataError(f"truncated audio: only {len(data)} of {declared} samples could be decoded")
    if len(data) == 0:
        raise DataError("empty audio (0 samples)")
    if not np.isfinite(data).all():
        raise DataError("audio holds NaN or infinite samples")
    return data, int(rate)


def _check_wav_truncation(log: str) -> None:
    """libsndfile logs ``data : 32000 (should be 15978)`` when a WAV's data chunk is cut short."""
    match = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", log or "", flags=re.MULTILINE)
    if match:
        declared, actual = int(match.group(1)), int(match.group(2))
        if declared > actual and declared not in _STREAMING_SIZES:
            raise DataError(f"truncated audio: the header declares {declared} bytes of samples, the file holds {actual}")


# --------------------------------------------------------------------------- arrays


def read_array(source: Path | bytes) -> np.ndarray:
    """A numeric array as float32: ``.npy`` (no pickles), ``.npz`` holding one array, or ``.csv``/``.txt`` numbers.

    Text tables are read as [rows, columns] (a header line is skipped). Object arrays,
    non-numeric dtypes, empty arrays and NaN/inf values raise DataError.
    """
    kind = _array_kind(source)
    if kind == "npy":
        array = _load_npy(source)
    elif kind == "npz":
        array = _load_npz(source)
    else:
        array = _load_text_table(source, delimiter="," if _suffix(source) == ".csv" else None)
    return _finite_float32(array)


def _load_npy(source: Path | bytes) -> np.ndarray:
    if not isinstance(source, (bytes, bytearray, memoryview)):
        plain = _load_plain_npy(source)
        if plain is not None:
            return plain
    try:
        array = np.load(_handle(source), allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickled" in str(exc):
            raise DataError("object / pickled arrays are refused (loading them would unpickle untrusted data)") from None
        raise DataError(_decode_reason(".npy array", exc)) from None
    except Exception as exc:  # noqa: BLE001 - truncated headers, wrong magic
        raise DataError(_decode_reason(".npy array", exc)) from None
    if not isinstance(array, np.ndarray):
        raise DataError("expected a .npy array, found an .npz archive")
    return array


#: Parsed .npy headers (header bytes -> dtype, shape, Fortran order): files of one data set share a few.
_NPY_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], bool]] = {}
_NPY_HEADERS_MAX = 4096


def _load_plain_npy(path: Path | str) -> np.ndarray | None:
    """A .npy file of a plain numeric dtype, read in one call, its header parsed once per distinct header.

    The same array ``np.load`` returns (writable, C or Fortran order as stored), for the common case only:
    a version 1/2 header, a numeric non-structured dtype and exactly the bytes the header announces.
    Anything else (empty, folder, truncated, object dtype, other versions, unreadable) returns None, and
    ``np.load`` then reads the file and words the error.
    """
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 10:
                return None
            buffer = bytearray(size)
            if fh.readinto(buffer) != size:
                return None
    except (OSError, ValueError):
        return None
    if buffer[:6] != _NPY_MAGIC:
        return None
    major = buffer[6]
    if major == 1:
        start, length = 10, int.from_bytes(buffer[8:10], "little")
    elif major == 2:
        start, length = 12, int.from_bytes(buffer[8:12], "little")
    else:
        return None
    offset = start + length
    header = bytes(buffer[:offset])
    parsed = _NPY_HEADERS.get(header)
    if parsed is None:
        try:
            handle = io.BytesIO(header)
            version = np.lib.format.read_magic(handle)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(handle)
        except Exception:  # noqa: BLE001 - np.load words the error
            return None
        if handle.tell() != offset:
            return None
        parsed = (dtype, tuple(int(n) for n in shape), bool(fortran))
        if len(_NPY_HEADERS) >= _NPY_HEADERS_MAX:
            _NPY_HEADERS.clear()
        _NPY_HEADERS[header] = parsed
    dtype, shape, fortran = parsed
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biuf":
        return None
    count = math.prod(shape)
    if count == 0 or size - offset != count * dtype.itemsize:
        return None
    array = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)


def _load_npz(source: Path | bytes) -> np.ndarray:
    try:
        with np.load(_handle(source), allow_pickle=False) as archive:
            names = list(archive.files)
            if len(names) != 1:
                raise DataError(f".npz holds {len(names)} arrays ({', '.join(names) or 'none'}); expected exactly one")
            return archive[names[0]]
    except DataError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickled" in str(exc):
            raise DataError("object / pickled arrays are refused (loading them would unpickle untrusted data)") from None
        raise DataError(_decode_reason(".npz archive", exc)) from None
    except Exception as exc:  # noqa: BLE001 - bad zip, truncated member
        raise DataError(_decode_reason(".npz archive", exc)) from None


def _load_text_table(source: Path | bytes, delimiter: str | None) -> np.ndarray:
    raw = source if isinstance(source, (bytes, bytearray)) else _read_bytes(source)
    if not raw:
        raise DataError("empty file (0 bytes)")
    try:
        text = bytes(raw).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text (byte {exc.start})") from None
    error: Exception | None = None
    for skip in (0, 1):  # the second try skips a header line
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "input contained no data"
                return np.loadtxt(io.StringIO(text), delimiter=delimiter, ndmin=2, skiprows=skip, dtype=np.float64)
        except ValueError as exc:
            error = error or exc
    raise DataError(f"not a numeric table: {error}")


def _finite_float32(array: np.ndarray) -> np.ndarray:
    """float32 copy; DataError for non-numeric dtypes, empty arrays and NaN/inf values."""
    if array.dtype.kind not in "biuf":
        raise DataError(f"array dtype {array.dtype} is not numeric")
    if array.size == 0:
        raise DataError(f"empty array (shape {tuple(array.shape)})")
    with np.errstate(over="ignore"):
        out = np.asarray(array, dtype=np.float32)
    finite = np.isfinite(out)
    if not finite.all():
        bad = int(out.size - finite.sum())
        raise DataError(f"array holds NaN or infinite values ({bad} of {out.size}, or values too large for float32)")
    return out


# --------------------------------------------------------------------------- video


def read_video(
    source: Path | bytes,
    *,
    channels: int | None = 3,
    max_frames: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    num_frames: int | None = None,
    fps: float | None = None,
) -> np.ndarray:
    """Frames [F, H, W, C]: uint8 from a video container (``.mp4 .mov .mkv .webm .avi``, PyAV),
    from images (a folder of frames sorted by name, or an animated GIF/APNG/TIFF/WebP), float32
    (uint8 kept) from a ``.npy`` [F, H, W] / [F, H, W, C].

    ``max_frames`` keeps the first frames only; ``channels`` None = 1 for grayscale, else 3.
    ``num_frames`` alone samples that many frames evenly over the clip (all when fewer);
    ``fps`` takes the frames shown at 0, 1/fps, 2/fps, ... seconds (at most ``num_frames``):
    containers use their timestamps, animated images their frame durations; ``.npy`` arrays
    and frame folders have no times and raise DataError. Containers are decoded in order,
    keeping only the sampled frames.
    """
    from polyfuse.data import video_files as vf

    _check_channels(channels)
    for name, value in (("max_frames", max_frames), ("num_frames", num_frames), ("fps", fps)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
    if not (isinstance(source, Path) and source.is_dir()) and not _is_npy(source) and vf.is_container(source):
        return vf.read_container(
            source, channels=channels, num_frames=num_frames, fps=fps, max_frames=max_frames, max_pixels=max_pixels
        )
    durations: np.ndarray | None = None  # [F] seconds each frame is shown (animated images)
    if isinstance(source, Path) and source.is_dir():
        clip = _read_frame_folder(source, channels, max_frames, max_pixels)
    elif _is_npy(source):
        clip = _read_npy_video(source, channels, max_frames, max_pixels)
    else:
        clip, durations = _read_animated(source, channels, max_frames, max_pixels)
    if fps is not None:
        if durations is None or not durations.sum() > 0:
            raise DataError("fps sampling needs frame times; .npy arrays, frame folders and animations without "
                            "frame durations have none (sample with num_frames only)")
        starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]])  # [F]
        return clip[vf.fps_indices(starts, float(durations.sum()), fps, num_frames)]
    return clip[vf.uniform_indices(clip.shape[0], num_frames)] if num_frames else clip


def _read_npy_video(source: Path | bytes, channels: int | None, max_frames: int | None, max_pixels: int) -> np.ndarray:
    array = _load_npy(source)
    if array.ndim not in (3, 4):
        raise DataError(f"expected video frames [F, H, W] or [F, H, W, C], got shape {tuple(array.shape)}")
    array = array[:max_frames] if max_frames else array
    array = array if array.ndim == 4 else array[..., None]
    _check_pixels(array.shape[2], array.shape[1], max_pixels)
    if array.dtype != np.uint8:
        array = _finite_float32(array)
    elif array.size == 0:
        raise DataError("empty video (no frames)")
    return _convert_channels(array, channels)


def _read_animated(
    source: Path | bytes, channels: int | None, max_frames: int | None, max_pixels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 [F, H, W, C] and how long each is shown in seconds [F] (0 when the file does not say)."""
    from PIL import Image, ImageSequence

    try:
        with _pillow_guard(), Image.open(_handle(source)) as image:
            _check_pixels(*image.size, max_pixels)
            if channels is None:
                channels = 1 if image.mode in ("1", "L", "LA", *_HIGH_BIT_GRAY) else 3
            frames, durations = [], []
            for frame in ImageSequence.Iterator(image):
                frames.append(_pil_to_array(frame.copy(), channels))
                durations.append(float(frame.info.get("duration") or 0.0) / 1000.0)
                _check_video_pixels(len(frames), image.size, max_pixels)
                if max_frames and len(frames) >= max_frames:
                    break
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"video refused as a possible decompression bomb ({exc})") from None
    except Exception as exc:  # noqa: BLE001
        raise DataError(_decode_reason("video", exc)) from None
    return np.stack(frames), np.array(durations)


def frame_files(folder: Path) -> list[Path]:
    """Image files of a frame folder in natural name order (``f2.png`` before ``f10.png``)."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _read_frame_folder(folder: Path, channels: int | None, max_frames: int | None, max_pixels: int) -> np.ndarray:
    files = frame_files(folder)
    if not files:
        raise DataError(f"no frame images ({', '.join(IMAGE_SUFFIXES)}) in folder")
    files = files[:max_frames] if max_frames else files
    frames = []
    for path in files:
        if frames:
            _check_video_pixels(len(frames) + 1, frames[0].shape[1::-1], max_pixels)
        try:
            frame = read_image(path, channels=channels, max_pixels=max_pixels)
        except DataError as exc:
            raise DataError(f"frame {path.name}: {exc.reason}") from None
        if frames and frame.shape != frames[0].shape:
            raise DataError(f"frame {path.name} is {_shape_text(frame)}, the first frame is {_shape_text(frames[0])}")
        channels = channels or frame.shape[2]
        frames.append(frame)
    return np.stack(frames)


# --------------------------------------------------------------------------- quick checks


def probe_file(path: Path, role: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """Check that a file of ``role`` (image, audio, sequence, video) is readable; return a short description.

    Cheaper than reading: .npy headers are checked against the file size, JPEGs are
    decoded at reduced scale, audio is not resampled. Raises DataError like the readers.
    """
    if role == "image":
        return _probe_image(path, max_pixels)
    if role == "audio":
        data, rate = _decode_audio(path)
        return f"{rate} Hz, {data.shape[1]} ch"
    if role == "video":
        if path.is_dir():
            files = frame_files(path)
            if not files:
                raise DataError(f"no frame images ({', '.join(IMAGE_SUFFIXES)}) in folder")
            first = read_image(files[0], max_pixels=max_pixels)
            return f"{_shape_text(first)} frames"
        if _is_npy(path):
            return _probe_npy(path)
        from polyfuse.data.video_files import is_container, probe_container

        if is_container(path):
            return probe_container(path, max_pixels=max_pixels).describe()
        frames = read_video(path, channels=None, max_pixels=max_pixels)
        return f"{_shape_text(frames[0])} frames"
    if role == "sequence":
        if _array_kind(path) == "npy":
            return _probe_npy(path)
        array = read_array(path)
        return f"array {tuple(array.shape)}"
    raise ValueError(f"no file check for role {role!r}")


def _probe_image(path: Path, max_pixels: int) -> str:
    if _is_npy(path):
        return _probe_npy(path)
    from PIL import Image

    try:
        with _pillow_guard(), Image.open(path) as image:
            width, height = image.size
            _check_pixels(width, height, max_pixels)
            mode = image.mode
            if image.format == "JPEG":  # decode every byte, at 1/8 scale
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"image refused as a possible decompression bomb ({exc})") from None
    except Exception as exc:  # noqa: BLE001
        raise DataError(_decode_reason("image", exc)) from None
    return f"{width}x{height} {mode}"


def _probe_npy(path: Path) -> str:
    """Shape and dtype from a .npy header; DataError for object dtypes and truncated data."""
    fmt = np.lib.format
    size = path.stat().st_size
    if size == 0:
        raise DataError("empty file (0 bytes)")
    try:
        with open(path, "rb") as handle:
            version = fmt.read_magic(handle)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _fortran, dtype = read_header(handle)
            offset = handle.tell()
    except Exception as exc:  # noqa: BLE001
        raise DataError(_decode_reason(".npy array", exc)) from None
    if dtype.hasobject:
        raise DataError("object / pickled arrays are refused (loading them would unpickle untrusted data)")
    if dtype.kind not in "biuf":
        raise DataError(f"array dtype {dtype} is not numeric")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < expected:
        raise DataError(f"truncated .npy: {size} bytes, the header needs {expected}")
    if int(np.prod(shape, dtype=np.int64)) == 0:
        raise DataError(f"empty array (shape {tuple(shape)})")
    return f"array {tuple(shape)} {dtype}"


# --------------------------------------------------------------------------- helpers


def _read_bytes(source: Path | bytes) -> bytes:
    handle = _handle(source)
    if isinstance(handle, str):
        try:
            return Path(handle).read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read file ({exc.strerror or exc})") from None
    return handle.read()


def _head(source: Path | bytes, n: int = 8) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:n])
    try:
        with open(source, "rb") as handle:
            return handle.read(n)
    except OSError:
        return b""


def _is_npy(source: Path | bytes) -> bool:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:6]) == _NPY_MAGIC
    return (source if isinstance(source, PurePath) else Path(source)).suffix.lower() == ".npy"


def _file_handle(source: Path | bytes) -> Any:
    """``file_checks.file_handle`` with one ``stat`` for a path (it is on every image read): the same
    path string back, and the same DataErrors for folders, zero-byte and unreadable files."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _handle(source)
    try:
        info = os.stat(source)
    except OSError as exc:
        raise DataError(f"cannot read file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise DataError("is a folder, not a file")
    if info.st_size == 0:
        raise DataError("empty file (0 bytes)")
    return os.fspath(source)


def _array_kind(source: Path | bytes) -> str:
    """``npy``, ``npz`` or ``text``: from the suffix of a path, from the magic bytes of bytes."""
    suffix = _suffix(source)
    if suffix in (".npy", ".npz"):
        return suffix[1:]
    if suffix:
        return "text"
    head = _head(source)
    return "npy" if head.startswith(_NPY_MAGIC) else "npz" if head.startswith(_ZIP_MAGIC) else "text"


def _check_channels(channels: int | None) -> None:
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")


def _convert_channels(array: np.ndarray, channels: int | None) -> np.ndarray:
    """[..., C] -> [..., channels]: luminance for 3/4 -> 1, repeat for 1 -> 3, alpha dropped."""
    have = array.shape[-1]
    if channels is None or have == channels:
        return array
    dtype = array.dtype
    if channels == 1 and have in (3, 4):
        gray = array[..., :3].astype(np.float64) @ _LUMA
        out = gray.round() if dtype == np.uint8 else gray
        return out[..., None].astype(dtype)
    if channels == 1 and have == 2:  # gray + alpha
        return array[..., :1]
    if channels == 3 and have in (1, 2):
        return np.repeat(array[..., :1], 3, axis=-1)
    if channels == 3 and have == 4:
        return array[..., :3]
    raise DataError(f"array has {have} channels; cannot convert it to {channels}")


@contextmanager
def _pillow_guard() -> Iterator[None]:
    """Pillow's own DecompressionBombWarning is silenced: ``max_pixels`` is the limit that counts."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _decode_reason(what: str, exc: Exception) -> str:
    message = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the given bytes", str(exc).strip()) or type(exc).__name__
    if "truncated" in message.lower() or "eof" in message.lower() or isinstance(exc, EOFError):
        return f"truncated or corrupt {what} ({message})"
    return f"cannot decode {what} ({type(exc).__name__}: {message})"


def _shape_text(frame: np.ndarray) -> str:
    return f"{frame.shape[1]}x{frame.shape[0]}x{frame.shape[2]}"


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]
