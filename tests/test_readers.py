"""File readers and path resolution on real files written into tmp dirs."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from polyfuse.data.paths import resolve_path
from polyfuse.data.readers import probe_file, read_array, read_audio, read_image, read_video
from polyfuse.errors import DataError


def _png_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


def _gradient(width: int = 32, height: int = 24) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    return Image.fromarray(np.stack([x, x[::-1], np.full_like(x, 90)], axis=2), "RGB")


def _patched_png_size(width: int, height: int) -> bytes:
    """A valid small PNG whose IHDR claims ``width`` x ``height`` (CRC fixed): a decompression-bomb header."""
    data = bytearray(_png_bytes(Image.new("L", (8, 8), 0)))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def _sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_frequency(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[np.argmax(spectrum)])


# --------------------------------------------------------------------------- images


def test_read_image_png_jpeg_channels(tmp_path: Path) -> None:
    rgb = _gradient()
    rgb.save(tmp_path / "a.png")
    rgb.save(tmp_path / "a.jpg", quality=95)
    rgb.convert("L").save(tmp_path / "g.png")

    png = read_image(tmp_path / "a.png")
    assert png.dtype == np.uint8 and png.shape == (24, 32, 3)
    np.testing.assert_array_equal(png, np.asarray(rgb))
    jpg = read_image(tmp_path / "a.jpg")
    assert jpg.shape == (24, 32, 3) and np.abs(jpg.astype(int) - png.astype(int)).mean() < 4
    assert read_image(tmp_path / "g.png").shape == (24, 32, 1)  # grayscale file -> 1 channel by default
    assert read_image(tmp_path / "g.png", channels=3).shape == (24, 32, 3)
    gray = read_image(tmp_path / "a.png", channels=1)
    np.testing.assert_array_equal(gray[..., 0], np.asarray(rgb.convert("L")))
    # bytes work as well as paths
    np.testing.assert_array_equal(read_image((tmp_path / "a.png").read_bytes()), png)


def test_read_image_exif_orientation_and_transparency(tmp_path: Path) -> None:
    image = Image.new("RGB", (30, 20), (200, 10, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    image.save(tmp_path / "o.jpg", exif=exif.tobytes())
    assert read_image(tmp_path / "o.jpg").shape == (30, 20, 3)  # H and W swapped

    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "t.png")
    np.testing.assert_array_equal(read_image(tmp_path / "t.png")[0, 0], [255, 255, 255])  # composited on white


def test_orientation_is_read_wherever_pillow_finds_it_and_skipped_without_metadata(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    from polyfuse.data.readers import may_be_oriented

    image = Image.new("RGB", (30, 20), (200, 10, 10))
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "exif.png", exif=exif.tobytes())  # PNG eXIf chunk
    xmp = PngImagePlugin.PngInfo()
    xmp.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>')
    image.save(tmp_path / "xmp.png", pnginfo=xmp)  # orientation in XMP only
    image.save(tmp_path / "plain.png")
    image.save(tmp_path / "plain.tif")
    assert read_image(tmp_path / "exif.png").shape == (30, 20, 3)
    assert read_image(tmp_path / "xmp.png").shape == (30, 20, 3)
    assert read_image(tmp_path / "plain.png").shape == (20, 30, 3)
    for name, expected in (("plain.png", False), ("exif.png", True), ("xmp.png", True), ("plain.tif", True)):
        with Image.open(tmp_path / name) as opened:
            opened.load()
            assert may_be_oriented(opened) is expected, name


def test_read_image_resized_by_pillow_equals_resizing_the_array(tmp_path: Path) -> None:
    from polyfuse.data.processors.image import center_crop_to_aspect, resize_hwc

    rgba = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 40, 4), dtype=np.uint8), "RGBA")
    files = {"rgb.png": _gradient(40, 24), "gray.png": _gradient(40, 24).convert("L"), "rgba.png": rgba,
             "rgb.jpg": _gradient(40, 24)}
    for name, image in files.items():
        image.save(tmp_path / name)
        for channels in (1, 3):
            whole = read_image(tmp_path / name, channels=channels)
            for size, crop in (((16, 16), True), ((16, 16), False), ((12, 20), True), ((24, 40), False), ((30, 50), True)):
                expected = resize_hwc(center_crop_to_aspect(whole, size) if crop else whole, size)
                got = read_image(tmp_path / name, channels=channels, size=size, crop=crop)
                assert got.dtype == np.uint8 and np.array_equal(got, expected), (name, channels, size, crop)
    np.save(tmp_path / "a.npy", np.zeros((24, 40), np.float32))  # arrays come back at their own size
    assert read_image(tmp_path / "a.npy", size=(16, 16)).shape == (24, 40, 1)


def test_read_image_16_bit_and_npy(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(tmp_path / "w.png")
    assert read_image(tmp_path / "w.png").max() == 255

    np.save(tmp_path / "x.npy", np.linspace(0, 1, 12, dtype=np.float64).reshape(3, 4))
    out = read_image(tmp_path / "x.npy")
    assert out.dtype == np.float32 and out.shape == (3, 4, 1)
    assert read_image(tmp_path / "x.npy", channels=3).shape == (3, 4, 3)
    np.save(tmp_path / "bad.npy", np.zeros((2, 2, 2, 2)))
    with pytest.raises(DataError, match="expected an image array"):
        read_image(tmp_path / "bad.npy")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_and_garbage_images_raise(tmp_path: Path, fmt: str) -> None:
    buffer = io.BytesIO()
    _gradient(64, 64).save(buffer, format=fmt)
    data = buffer.getvalue()
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated|cannot decode"):
        read_image(path)
    with pytest.raises(DataError, match="cannot decode image"):
        read_image(b"this is not an image at all")


def test_zero_byte_files_raise(tmp_path: Path) -> None:
    for name in ("a.png", "a.wav", "a.npy", "a.csv"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        read_image(tmp_path / "a.png")
    with pytest.raises(DataError, match="empty file"):
        read_audio(tmp_path / "a.wav", sample_rate=8000)
    with pytest.raises(DataError, match="empty file"):
        read_array(tmp_path / "a.npy")
    with pytest.raises(DataError, match="empty file"):
        read_array(tmp_path / "a.csv")
    with pytest.raises(DataError, match="empty file"):
        read_image(b"")


def test_decompression_bomb_refused_before_decoding(tmp_path: Path) -> None:
    # header declares 8000 x 8000 = 64M pixels: above the default max_pixels (50M), below Pillow's own limit
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_patched_png_size(8000, 8000))
    with pytest.raises(DataError, match="8000x8000 = 64,000,000 pixels, more than max_pixels=50,000,000"):
        read_image(bomb)
    with pytest.raises(DataError, match="max_pixels"):
        probe_file(bomb, "image")
    # Pillow's own guard for absurd sizes is reported as a DataError too
    with pytest.raises(DataError, match="decompression bomb"):
        read_image(_patched_png_size(100_000, 100_000))
    # a small real image is refused by a small limit
    with pytest.raises(DataError, match="more than max_pixels=100"):
        read_image(_png_bytes(_gradient()), max_pixels=100)


# --------------------------------------------------------------------------- audio


def test_read_audio_resamples_and_mixes_to_mono(tmp_path: Path) -> None:
    left, right = _sine(440, 8000, 1.0), _sine(440, 8000, 1.0, amplitude=0.25)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 8000, subtype="PCM_16")
    out = read_audio(tmp_path / "s.wav", sample_rate=16000)
    assert out.dtype == np.float32 and out.shape == (16000,)  # 1 s at the new rate
    assert _peak_frequency(out, 16000) == pytest.approx(440, abs=2)  # pitch preserved
    assert np.abs(out).max() == pytest.approx(0.375, abs=0.01)  # mean of the two channels
    assert np.abs(out).max() <= 1.0

    stereo = read_audio(tmp_path / "s.wav", sample_rate=8000, mono=False)
    assert stereo.shape == (2, 8000)

    sf.write(tmp_path / "s.flac", _sine(1000, 22050, 0.5), 22050)
    out = read_audio((tmp_path / "s.flac").read_bytes(), sample_rate=16000)
    assert out.shape == (8000,) and _peak_frequency(out, 16000) == pytest.approx(1000, abs=3)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_truncated_audio_raises(tmp_path: Path, fmt: str) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, _sine(440, 8000, 1.0), 8000, format=fmt)
    data = buffer.getvalue()
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated|cannot decode"):
        read_audio(path, sample_rate=8000)
    with pytest.raises(DataError, match="cannot decode audio"):
        read_audio(data[:30], sample_rate=8000)  # header cut in the middle


def test_empty_and_non_finite_audio(tmp_path: Path) -> None:
    sf.write(tmp_path / "e.wav", np.zeros((0, 1), dtype=np.float32), 8000)
    with pytest.raises(DataError, match="empty audio"):
        read_audio(tmp_path / "e.wav", sample_rate=8000)
    sf.write(tmp_path / "n.wav", np.array([0.1, np.nan, 0.2], dtype=np.float32), 8000, subtype="FLOAT")
    with pytest.raises(DataError, match="NaN"):
        read_audio(tmp_path / "n.wav", sample_rate=8000)


# --------------------------------------------------------------------------- arrays


def test_read_array_formats(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(6, dtype=np.int16).reshape(3, 2))
    out = read_array(tmp_path / "a.npy")
    assert out.dtype == np.float32 and out.tolist() == [[0, 1], [2, 3], [4, 5]]
    np.savez(tmp_path / "one.npz", x=np.ones((4, 2)))
    assert read_array(tmp_path / "one.npz").shape == (4, 2)
    (tmp_path / "t.csv").write_text("ax,ay\n1,2\n3.5,4\n")  # header skipped
    assert read_array(tmp_path / "t.csv").tolist() == [[1, 2], [3.5, 4]]
    (tmp_path / "t.txt").write_text("1 2 3\n")
    assert read_array(tmp_path / "t.txt").shape == (1, 3)
    assert read_array((tmp_path / "a.npy").read_bytes()).shape == (3, 2)


def test_read_array_refuses_unsafe_and_bad_values(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickled arrays are refused"):
        read_array(tmp_path / "obj.npy")
    with pytest.raises(DataError, match="pickled arrays are refused"):
        probe_file(tmp_path / "obj.npy", "sequence")
    for bad in (np.array([1.0, np.nan]), np.array([[np.inf, 1.0]]), np.array([1e39])):
        np.save(tmp_path / "bad.npy", bad)
        with pytest.raises(DataError, match="NaN or infinite"):
            read_array(tmp_path / "bad.npy")
    np.savez(tmp_path / "two.npz", a=np.ones(2), b=np.ones(2))
    with pytest.raises(DataError, match="holds 2 arrays"):
        read_array(tmp_path / "two.npz")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(DataError, match="not numeric"):
        read_array(tmp_path / "s.npy")
    (tmp_path / "words.csv").write_text("a,b\nx,y\n")
    with pytest.raises(DataError, match="not a numeric table"):
        read_array(tmp_path / "words.csv")


def test_read_array_npy_fast_path_matches_np_load(tmp_path: Path) -> None:
    from polyfuse.data.readers import _load_plain_npy

    rng = np.random.default_rng(0)
    arrays = {
        "c": rng.random((37, 13), dtype=np.float32), "f": np.asfortranarray(rng.random((5, 7))),
        "i16": np.arange(12, dtype=np.int16).reshape(3, 4), "big_endian": np.arange(6, dtype=">f8").reshape(2, 3),
        "bool": np.array([True, False]), "scalar": np.array(3.5), "u8": rng.integers(0, 255, (4, 4, 3), dtype=np.uint8),
    }
    for name, array in arrays.items():
        np.save(tmp_path / f"{name}.npy", array)
        for _ in range(2):  # the second read parses no header
            fast = _load_plain_npy(tmp_path / f"{name}.npy")
            assert fast is not None and fast.flags.writeable, name
            assert fast.dtype == array.dtype and fast.shape == array.shape and np.array_equal(fast, array), name
            assert fast.flags.f_contiguous == np.load(tmp_path / f"{name}.npy").flags.f_contiguous, name
        assert np.array_equal(read_array(tmp_path / f"{name}.npy"), array.astype(np.float32))
    with open(tmp_path / "v2.npy", "wb") as fh:
        np.lib.format.write_array(fh, arrays["c"], version=(2, 0))
    assert np.array_equal(_load_plain_npy(tmp_path / "v2.npy"), arrays["c"])
    # anything unusual is left to np.load (and its errors): truncated, trailing bytes, empty, objects, folders
    raw = (tmp_path / "c.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(raw[:-4])
    (tmp_path / "long.npy").write_bytes(raw + b"xx")
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    np.save(tmp_path / "objects.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    (tmp_path / "folder.npy").mkdir()
    for name in ("short", "long", "empty", "objects", "folder"):
        assert _load_plain_npy(tmp_path / f"{name}.npy") is None, name
    with pytest.raises(DataError, match="truncated or corrupt|cannot decode"):
        read_array(tmp_path / "short.npy")
    with pytest.raises(DataError, match="pickled arrays are refused"):
        read_array(tmp_path / "objects.npy")


def test_truncated_npy_detected_by_read_and_probe(tmp_path: Path) -> None:
    np.save(tmp_path / "full.npy", np.ones((50, 13), dtype=np.float32))
    data = (tmp_path / "full.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) - 100])
    with pytest.raises(DataError):
        read_array(tmp_path / "cut.npy")
    with pytest.raises(DataError, match="truncated .npy"):
        probe_file(tmp_path / "cut.npy", "sequence")
    assert probe_file(tmp_path / "full.npy", "sequence") == "array (50, 13) float32"


# --------------------------------------------------------------------------- video


def test_read_video_sources(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 6), (i * 50, 0, 0)) for i in range(5)]
    frames[0].save(tmp_path / "v.gif", save_all=True, append_images=frames[1:])
    video = read_video(tmp_path / "v.gif")
    assert video.shape == (5, 6, 8, 3) and video.dtype == np.uint8
    np.testing.assert_allclose(video[:, 0, 0, 0], [0, 50, 100, 150, 200], atol=3)
    assert read_video(tmp_path / "v.gif", max_frames=2).shape == (2, 6, 8, 3)

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (0, 2, 10):  # natural order: f2 before f10
        Image.new("L", (8, 6), i * 20).save(folder / f"f{i}.png")
    video = read_video(folder, channels=None)
    assert video.shape == (3, 6, 8, 1) and video[:, 0, 0, 0].tolist() == [0, 40, 200]

    np.save(tmp_path / "v.npy", np.zeros((4, 6, 8), dtype=np.uint8))
    assert read_video(tmp_path / "v.npy").shape == (4, 6, 8, 3)
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    with pytest.raises(DataError, match="convert it to a folder of frames"):
        read_video(tmp_path / "clip.mp4")
    Image.new("L", (4, 4)).save(folder / "f11.png")  # a frame of another size
    with pytest.raises(DataError, match="f11.png is 4x4x3, the first frame is 8x6x3"):
        read_video(folder)


# --------------------------------------------------------------------------- paths


def test_resolve_path_relative_absolute_and_missing(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    (root / "img" / "a.png").write_bytes(b"x")
    assert resolve_path("img/a.png", root) == root.resolve() / "img" / "a.png"
    assert resolve_path(" img/a.png ", root).name == "a.png"  # whitespace around the value is ignored
    assert resolve_path(str(root / "img" / "a.png"), root).name == "a.png"  # absolute inside root
    assert resolve_path("img\\a.png", root).name == "a.png"  # a manifest written on Windows
    with pytest.raises(DataError, match="file not found") as err:
        resolve_path("img/b.png", root, file="m.csv", row=4, column="image")
    assert (err.value.file, err.value.row, err.value.column) == ("m.csv", 4, "image")
    assert str(err.value).startswith("m.csv, row 4, column 'image': 'img/b.png': file not found")
    for empty in ("", "   ", None, float("nan")):
        with pytest.raises(DataError, match="empty path"):
            resolve_path(empty, root)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="URLs are not read"):
        resolve_path("https://example.com/a.png", root)


def test_resolve_path_refuses_escapes_and_outside_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (root / "inside.txt").write_text("ok")
    with pytest.raises(DataError, match="path escapes the data root") as err:
        resolve_path("../secret.txt", root, file="m.csv", row=2, column="doc")
    assert err.value.row == 2 and err.value.column == "doc"
    with pytest.raises(DataError, match="absolute path outside the data root"):
        resolve_path(str(outside), root)
    os.symlink(outside, root / "link.txt")
    with pytest.raises(DataError, match="symlink points outside"):
        resolve_path("link.txt", root)
    os.symlink(root / "inside.txt", root / "good_link.txt")
    assert resolve_path("good_link.txt", root).name == "good_link.txt"  # inside: fine, name kept
    os.symlink(root / "gone.txt", root / "broken.txt")
    with pytest.raises(DataError, match="broken symlink"):
        resolve_path("broken.txt", root)
    # explicitly allowed
    assert resolve_path("../secret.txt", root, allow_outside_root=True).read_text() == "secret"
    assert resolve_path("link.txt", root, allow_outside_root=True).read_text() == "secret"


def test_resolve_path_checks_every_component_below_the_root(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "x.png").write_bytes(b"x")
    (tmp_path / "elsewhere" / "b").mkdir(parents=True)
    (tmp_path / "elsewhere" / "b" / "x.png").write_bytes(b"x")
    os.symlink(tmp_path / "elsewhere", root / "out")  # a folder link leaving the root
    os.symlink(root / "a", root / "in")  # a folder link inside it
    assert resolve_path("a/b/x.png", root) == root.resolve() / "a" / "b" / "x.png"
    assert resolve_path("./a//b/x.png", root) == root.resolve() / "a" / "b" / "x.png"
    assert resolve_path("in/b/x.png", root) == root.resolve() / "in" / "b" / "x.png"  # the written name is kept
    assert resolve_path("a/b", root).is_dir()  # a folder (of video frames) is a valid target
    for text in ("out/b/x.png", str(root / "out" / "b" / "x.png")):
        with pytest.raises(DataError, match="symlink points outside"):
            resolve_path(text, root)
    with pytest.raises(DataError, match="path escapes"):
        resolve_path("a/../../elsewhere/b/x.png", root)
    assert resolve_path("in/../a/b/x.png", root).read_bytes() == b"x"  # '..' after a link: resolved, inside
    with pytest.raises(DataError, match="file not found"):
        resolve_path("a/b/x.png/y", root)
    # a root given through a symlink, and a relative root
    os.symlink(root, tmp_path / "root_link")
    assert resolve_path("a/b/x.png", tmp_path / "root_link") == root.resolve() / "a" / "b" / "x.png"
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert resolve_path("a/b/x.png", Path("data")) == root.resolve() / "a" / "b" / "x.png"
    finally:
        os.chdir(cwd)


def test_video_total_pixel_guard(tmp_path: Path) -> None:
    frames = [Image.new("L", (10, 10), i) for i in range(20)]
    frames[0].save(tmp_path / "long.gif", save_all=True, append_images=frames[1:])
    # 16 x max_pixels = 1600 pixels = 16 frames of 10x10 at most
    with pytest.raises(DataError, match="video too large: 17 frames of 10x10"):
        read_video(tmp_path / "long.gif", max_pixels=100)
    assert read_video(tmp_path / "long.gif", max_pixels=100, max_frames=16).shape == (16, 10, 10, 3)
