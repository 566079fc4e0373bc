"""Video container files (.mp4 .mov .mkv .webm .avi) decoded with PyAV, and frame sampling. Numpy only, no torch.

PyAV (``pip install polyfuse[video]``; its wheels carry ffmpeg) is imported only when a
container is read. Frames are decoded in order and converted to arrays only at the wanted
positions, so a clip never holds more than the frames it returns. Errors are
``DataError(reason)``; the caller adds file/row/column.
"""

from __future__ import annotations

import io
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from polyfuse.data.file_checks import check_pixels, check_video_pixels, suffix_of
from polyfuse.data.file_checks import file_handle as handle
from polyfuse.errors import DataError

CONTAINER_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
#: ffmpeg demuxers accepted: anything else (an image or text ffmpeg happens to read) is refused.
CONTAINER_FORMATS = {"mov,mp4,m4a,3gp,3g2,mj2": "MP4/MOV", "matroska,webm": "Matroska/WebM", "avi": "AVI"}
_GRAY_PIX_FMTS = ("gray", "ya8", "ya16", "monow", "monob")
_TIME_EPS = 1e-3  # seconds: a frame this close after a sampling time counts as "at" it
_MISSING_TAIL = 0.02  # up to this share of declared frames may be missing at the end (headers round)


def uniform_indices(total: int, count: int) -> np.ndarray:
    """``count`` frame indices spread evenly over ``total`` frames (all of them when fewer)."""
    if total <= count:
        return np.arange(total)
    return np.linspace(0, total - 1, count).round().astype(np.int64)


def fps_indices(times: np.ndarray, end: float, fps: float, count: int | None) -> np.ndarray:
    """Indices of the frames shown at 0, 1/fps, 2/fps, ... seconds (before ``end``), at most ``count``.

    ``times`` [F] are the frames' start times in seconds from the clip's first frame, ascending;
    the frame shown at time t is the last one starting at or before t (repeated when fps is
    above the clip's own rate).
    """
    n = max(0, int(np.ceil(end * fps - 1e-9)))
    n = min(n, count) if count is not None else n
    targets = np.arange(n) / fps  # [n] seconds
    return np.clip(np.searchsorted(times, targets + _TIME_EPS, side="right") - 1, 0, len(times) - 1)


def is_container(source: Path | bytes) -> bool:
    """True for a container file: by suffix for a path, by magic bytes for uploaded bytes."""
    if not isinstance(source, (bytes, bytearray, memoryview)):
        return suffix_of(source) in CONTAINER_SUFFIXES
    head = bytes(source[:12])
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free")
        or head.startswith(b"\x1a\x45\xdf\xa3")  # EBML: Matroska / WebM
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
    )


@dataclass(frozen=True)
class VideoInfo:
    """What ``polyfuse data inspect`` reports about a container file."""

    width: int
    height: int
    codec: str
    fps: float | None  # average frame rate
    duration: float | None  # seconds
    frames: int  # declared by the header, else counted from the packets

    def describe(self) -> str:
        fps = f"{self.fps:.4g} fps" if self.fps else "unknown fps"
        duration = f"{self.duration:.2f} s" if self.duration is not None else "unknown duration"
        return f"{self.width}x{self.height} {self.codec}, {fps}, {duration}, {self.frames} frames"


def probe_container(source: Path | bytes, *, max_pixels: int) -> VideoInfo:
    """Size, codec, frame rate, duration and frame count; one demux pass checks for truncation and
    the first frame is decoded (the codec works). Cheaper than reading the clip."""
    with _open(source) as (container, stream):
        width, height = _size(stream, max_pixels)
        fps, declared = _rate(stream), _declared_duration(container, stream)
        count, end, decoded = 0, 0.0, False
        with _decode_errors(source):
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the flush packet at the end
                count += 1
                if packet.pts is not None and packet.time_base is not None:
                    end = max(end, float(packet.pts * packet.time_base) + float((packet.duration or 0) * packet.time_base))
                if not decoded:
                    decoded = bool(packet.decode())
        if count == 0 or (not decoded and not _flush_decodes(stream)):
            raise DataError("empty video (no frame could be decoded)")
        start = _start(container, stream)
        _check_coverage(end - start if end else None, declared, fps, count)
        frames = int(stream.frames or count)
        duration = declared if declared is not None else (end - start if end else (count / fps if fps else None))
        return VideoInfo(width, height, stream.codec_context.name, fps, duration, frames)


def read_container(
    source: Path | bytes,
    *,
    channels: int | None,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    max_pixels: int,
) -> np.ndarray:
    """Frames uint8 [F, H, W, C] of the first video stream.

    ``num_frames`` alone: that many spread evenly over the clip (all frames when fewer);
    ``fps``: the frames shown at 0, 1/fps, 2/fps, ... seconds, at most ``num_frames``;
    neither: every frame. ``max_frames`` limits the clip to its first frames before sampling.
    """
    with _open(source) as (container, stream):
        width, height = _size(stream, max_pixels)
        gray = channels == 1 or (channels is None and str(stream.codec_context.pix_fmt or "").startswith(_GRAY_PIX_FMTS))
        fmt = "gray" if gray else "rgb24"

        def convert(frame: Any) -> np.ndarray:  # [H, W, C] uint8, every frame at the first frame's size
            array = frame.to_ndarray(format=fmt, width=width, height=height)
            return array[..., None] if array.ndim == 2 else array

        with _decode_errors(source):
            if fps is not None:
                frames = _sample_times(container, stream, fps, num_frames, max_frames, convert, (width, height), max_pixels)
            else:
                total = _frame_total(source, stream)
                total = min(total, max_frames) if max_frames else total
                wanted = uniform_indices(total, num_frames) if num_frames else np.arange(total)
                frames = _sample_indices(container, stream, wanted, total, convert, (width, height), max_pixels)
    if not frames:
        raise DataError("empty video (no frame could be decoded)")
    return np.stack(frames)


# --------------------------------------------------------------------------- decoding


def _sample_indices(
    container: Any, stream: Any, wanted: np.ndarray, total: int,
    convert: Callable[[Any], np.ndarray], size: tuple[int, int], max_pixels: int,
) -> list[np.ndarray]:
    """Decode in order and convert only the frames at ``wanted`` (ascending indices of ``total``)."""
    if len(wanted) == 0:
        return []
    check_video_pixels(len(wanted), size, max_pixels)  # refused before decoding
    kept: dict[int, np.ndarray] = {}
    targets = set(int(i) for i in wanted)
    last, decoded = None, 0
    for index, frame in enumerate(container.decode(stream)):
        if index in targets:
            kept[index] = convert(frame)
        last, decoded = frame, index + 1
        if index >= wanted[-1]:
            break
    missing = [int(i) for i in wanted if int(i) not in kept]
    if missing:
        if last is None or total - decoded > max(1, int(_MISSING_TAIL * total)):
            raise DataError(f"truncated or corrupt video: only {decoded} of {total} frames could be decoded")
        tail = convert(last)  # headers that count a frame or two more than the stream holds
        kept.update({i: tail for i in missing})
    return [kept[int(i)] for i in wanted]


def _sample_times(
    container: Any, stream: Any, fps: float, count: int | None, max_frames: int | None,
    convert: Callable[[Any], np.ndarray], size: tuple[int, int], max_pixels: int,
) -> list[np.ndarray]:
    """The frames shown at k / fps seconds (k = 0, 1, ...), decoded in order, at most ``count``."""
    period = 1.0 / _rate(stream) if _rate(stream) else 0.0
    out: list[np.ndarray] = []
    previous: Any = None
    previous_array: np.ndarray | None = None
    first: float | None = None
    t = 0.0
    index = -1

    def take() -> None:
        nonlocal previous_array
        if previous_array is None:
            previous_array = convert(previous)
        out.append(previous_array)
        check_video_pixels(len(out), size, max_pixels)

    for index, frame in enumerate(container.decode(stream)):
        if max_frames and index >= max_frames:
            break
        start = frame.time if frame.time is not None else index * period
        first = start if first is None else first
        t = start - first  # seconds from the first frame
        while previous is not None and len(out) / fps + _TIME_EPS < t and (count is None or len(out) < count):
            take()  # sampling times before this frame show the previous one
        if count is not None and len(out) >= count:
            return out
        previous, previous_array = frame, None
    if previous is None:
        return out
    end = t + (period or (t / index if index > 0 else 1.0 / fps))  # the last frame is shown for one period
    if not max_frames or index < max_frames:
        _check_coverage(end, _declared_duration(container, stream), _rate(stream), index + 1)
    while len(out) / fps < end - 1e-9 and (count is None or len(out) < count):
        take()
    return out


def _frame_total(source: Path | bytes, stream: Any) -> int:
    """Frames declared by the header, else counted in a demux pass (packets, no decoding)."""
    if stream.frames:
        return int(stream.frames)
    with _open(source) as (counting, counted_stream):
        count, end = 0, 0.0
        for packet in counting.demux(counted_stream):
            if packet.size:
                count += 1
                if packet.pts is not None and packet.time_base is not None:
                    end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
        start = _start(counting, counted_stream)
        _check_coverage(end - start if end else None, _declared_duration(counting, counted_stream), _rate(counted_stream), count)
    return count


def _check_coverage(end: float | None, declared: float | None, fps: float | None, frames: int) -> None:
    """DataError when the frames found stop well before the duration the header declares (a cut file)."""
    if end is None or declared is None or declared <= 0:
        return
    slack = max(0.05 * declared, 2.0 / fps if fps else 0.0)
    if end < declared - slack:
        raise DataError(
            f"truncated video: the header declares {declared:.2f} s, the frames found ({frames}) end at {end:.2f} s"
        )


def _flush_decodes(stream: Any) -> bool:
    try:
        return bool(stream.codec_context.decode(None))
    except Exception:  # noqa: BLE001 - a decoder that cannot flush decoded nothing
        return False


# --------------------------------------------------------------------------- metadata


def _size(stream: Any, max_pixels: int) -> tuple[int, int]:
    width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if width <= 0 or height <= 0:
        raise DataError("video stream without a frame size")
    check_pixels(width, height, max_pixels)
    return width, height


def _rate(stream: Any) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def _start(container: Any, stream: Any) -> float:
    if stream.start_time is not None and stream.time_base is not None:
        return float(stream.start_time * stream.time_base)
    return 0.0


def _declared_duration(container: Any, stream: Any) -> float | None:
    """The video stream's duration in seconds, else the container's when it holds only video."""
    if stream.duration and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration and len(container.streams) == len(container.streams.video):
        return container.duration / 1_000_000
    return None


# --------------------------------------------------------------------------- opening


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise DataError("reading video files (.mp4 .webm .avi .mkv .mov) needs PyAV: pip install polyfuse[video]") from None
    return av


@contextmanager
def _open(source: Path | bytes) -> Iterator[tuple[Any, Any]]:
    """(container, first video stream); DataError for files that are not a video container."""
    av = _import_av()
    target = handle(source)
    if not isinstance(target, str):
        target = io.BytesIO(target.read())
    try:
        container = av.open(target, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise DataError(_reason(source, exc)) from None
    try:
        name = container.format.name
        if name not in CONTAINER_FORMATS:
            raise DataError(
                f"not a video container: ffmpeg reads it as {name!r} (expected {', '.join(CONTAINER_FORMATS.values())})"
            )
        if not container.streams.video:
            kinds = ", ".join(s.type for s in container.streams) or "none"
            raise DataError(f"no video stream in the file (streams: {kinds})")
        yield container, container.streams.video[0]
    finally:
        container.close()


@contextmanager
def _decode_errors(source: Path | bytes) -> Iterator[None]:
    av = _import_av()
    try:
        yield
    except av.error.FFmpegError as exc:
        raise DataError(_reason(source, exc)) from None


def _reason(source: Path | bytes, exc: Exception) -> str:
    message = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc).strip()) or type(exc).__name__
    message = re.sub(r":\s*'[^']*'$", "", message)  # ffmpeg appends the file name or the failing call
    kind = suffix_of(source) or "uploaded"
    return (
        f"cannot decode {kind} video ({type(exc).__name__}: {message}): the file is truncated, corrupt or not a video; "
        f"if a player opens it, convert it to a folder of frames (ffmpeg -i clip{suffix_of(source) or '.mp4'} "
        "frames/%05d.png) or a .npy array [F, H, W, C]"
    )
