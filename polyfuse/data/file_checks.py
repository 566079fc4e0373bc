"""Checks every file reader shares: a readable handle, the suffix, and the decompression-bomb guards."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

from polyfuse.errors import DataError

VIDEO_MAX_PIXELS_FACTOR = 16  # a video may decode to at most this many times max_pixels in all


def file_handle(source: Path | bytes) -> str | BinaryIO:
    """A path string or a bytes stream for the decoders; DataError for zero-byte files and folders."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise DataError("empty file (0 bytes)")
        return io.BytesIO(bytes(source))
    path = Path(source)
    try:
        if path.is_dir():
            raise DataError("is a folder, not a file")
        if path.stat().st_size == 0:
            raise DataError("empty file (0 bytes)")
    except OSError as exc:
        raise DataError(f"cannot read file ({exc.strerror or exc})") from None
    return str(path)


def suffix_of(source: Path | bytes) -> str:
    return "" if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).suffix.lower()


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise DataError(
            f"image is {width}x{height} = {width * height:,} pixels, more than max_pixels={max_pixels:,} "
            "(refused before decoding: a possible decompression bomb)"
        )


def check_video_pixels(frames: int, size: tuple[int, int], max_pixels: int) -> None:
    total = frames * size[0] * size[1]
    if total > VIDEO_MAX_PIXELS_FACTOR * max_pixels:
        raise DataError(
            f"video too large: {frames} frames of {size[0]}x{size[1]} exceed {VIDEO_MAX_PIXELS_FACTOR} x max_pixels "
            f"({VIDEO_MAX_PIXELS_FACTOR * max_pixels:,} pixels); read fewer frames with max_frames"
        )
