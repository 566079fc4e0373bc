"""Video container files (.mp4 .webm .avi .mkv) encoded at test time from real AV-MNIST digits, read back with PyAV."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from polyfuse.data.processors.base import FitContext, RowContext
from polyfuse.data.processors.video import VideoProcessor
from polyfuse.data.readers import probe_file, read_video
from polyfuse.data.video_files import fps_indices
from polyfuse.config import ConfigError
from polyfuse.errors import DataError
from polyfuse.row_problems import PredictionProblemsWarning
from data_fixtures import avmnist_rows

av = pytest.importorskip("av")
runner = CliRunner()
RATE = 10  # frames per second of every test clip

#: name -> (suffix, ffmpeg muxer, encoder, pixel format, encoder options)
FORMATS: dict[str, tuple[str, str, str, str, dict[str, str]]] = {
    "mp4-h264": (".mp4", "mp4", "libx264", "yuv420p", {"crf": "8"}),
    "mp4-mpeg4": (".mp4", "mp4", "mpeg4", "yuv420p", {}),
    "webm-vp9": (".webm", "webm", "libvpx-vp9", "yuv420p", {"crf": "8", "b": "0"}),
    "webm-vp8": (".webm", "webm", "libvpx", "yuv420p", {"crf": "4", "b": "2M"}),
    "avi-mjpeg": (".avi", "avi", "mjpeg", "yuvj420p", {}),
    "mkv-h264": (".mkv", "matroska", "libx264", "yuv420p", {"crf": "8"}),
}


def encoder_or_skip(name: str) -> None:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - the bundled ffmpeg lacks this encoder
        pytest.skip(f"the ffmpeg bundled with PyAV {av.__version__} has no {name} encoder")


def write_clip(path: Path, frames: list[np.ndarray], fmt: str = "mkv-h264", rate: int = RATE) -> Path:
    """Encode gray uint8 frames [H, W] into ``path`` (the container / codec of FORMATS[fmt])."""
    _, muxer, codec, pix_fmt, options = FORMATS[fmt]
    encoder_or_skip(codec)
    with av.open(str(path), "w", format=muxer) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        stream.options = options
        if codec in ("mpeg4", "mjpeg"):  # fixed fine quantizer: their default bit rate blurs 28x28 digits
            stream.codec_context.bit_rate = 4_000_000
            stream.codec_context.qmax = 3
        for frame in frames:
            rgb = np.repeat(frame[..., None], 3, axis=2)  # [H, W, 3]
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def digits() -> tuple[list[np.ndarray], list[int]]:
    """Real AV-MNIST handwritten digits: 20 gray images [28, 28] uint8 and their labels."""
    train, _, root = avmnist_rows(20, 0)
    images = []
    for name in train["image"]:
        with Image.open(root / name) as image:
            images.append(np.array(image.convert("L")))
    return images, [int(v) for v in train["label"]]


def nearest(frames: np.ndarray, sources: list[np.ndarray]) -> list[int]:
    """For each frame [F, H, W, 1], the index of the source image it is closest to (mean abs error)."""
    stack = np.stack(sources).astype(np.float64)  # [S, H, W]
    return [int(np.abs(stack - f[..., 0]).mean(axis=(1, 2)).argmin()) for f in frames.astype(np.float64)]


def mean_abs_errors(frames: np.ndarray, sources: list[np.ndarray], indices: list[int]) -> np.ndarray:
    return np.array([np.abs(f[..., 0].astype(np.float64) - sources[i]).mean() for f, i in zip(frames, indices)])


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_frames_read_back_match_the_source_digits(fmt: str, digits: Any, tmp_path: Path) -> None:
    images = digits[0][:10]
    path = write_clip(tmp_path / f"clip{FORMATS[fmt][0]}", images, fmt)
    every = read_video(path, channels=1)
    assert every.shape == (10, 28, 28, 1) and every.dtype == np.uint8
    assert nearest(every, images) == list(range(10))  # right frames, right order
    gaps = [np.abs(images[i].astype(float) - images[j]).mean() for i in range(10) for j in range(10) if i != j]
    errors = mean_abs_errors(every, images, list(range(10)))
    assert errors.max() < 10 and errors.max() < min(gaps) / 2, (errors, min(gaps))

    sampled = read_video(path, channels=1, num_frames=4)  # even: frames 0, 3, 6, 9
    assert nearest(sampled, images) == [0, 3, 6, 9]
    np.testing.assert_array_equal(sampled, every[[0, 3, 6, 9]])
    assert read_video(path, channels=None).shape[-1] == 3  # colour pixel format -> RGB
    uploaded = read_video(path.read_bytes(), channels=1, num_frames=3)  # server uploads: bytes, no name
    assert nearest(uploaded, images) == [0, 4, 9]
    codec = FORMATS[fmt][2].replace("libx264", "h264").replace("libvpx-vp9", "vp9").replace("libvpx", "vp8")
    assert probe_file(path, "video") == f"28x28 {codec}, 10 fps, 1.00 s, 10 frames"


def test_webm_without_a_frame_count_is_counted_and_sampled(digits: Any, tmp_path: Path) -> None:
    images = digits[0][:13]
    path = write_clip(tmp_path / "clip.webm", images, "webm-vp9")
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # no count in the header: a counting pass is needed
    assert nearest(read_video(path, channels=1, num_frames=5), images) == [0, 3, 6, 9, 12]
    assert nearest(read_video(path, channels=1, num_frames=5, max_frames=5), images) == [0, 1, 2, 3, 4]


def test_fps_sampling_takes_the_frames_shown_at_each_time(digits: Any, tmp_path: Path) -> None:
    images = digits[0][:10]  # 10 frames at 10 fps: frame i is shown from i/10 s, the clip ends at 1.0 s
    path = write_clip(tmp_path / "clip.mp4", images, "mp4-h264")
    # 4 fps: 0, 0.25, 0.5 s -> frames 0, 2, 5 (capped at num_frames=3)
    assert nearest(read_video(path, channels=1, num_frames=3, fps=4.0), images) == [0, 2, 5]
    # 2 fps, room for 8: 0, 0.5 s; 1.0 s is past the end
    assert nearest(read_video(path, channels=1, num_frames=8, fps=2.0), images) == [0, 5]
    # 3 fps without a cap: 0, 0.333, 0.667 s -> 0, 3, 6
    assert nearest(read_video(path, channels=1, fps=3.0), images) == [0, 3, 6]
    # above the clip's rate frames repeat: 0, .04, .08, .12, .16 s
    assert nearest(read_video(path, channels=1, num_frames=5, fps=25.0), images) == [0, 0, 0, 1, 1]
    times = np.arange(10) / RATE
    assert fps_indices(times, 1.0, 4.0, 3).tolist() == [0, 2, 5]
    assert fps_indices(times, 1.0, 25.0, 5).tolist() == [0, 0, 0, 1, 1]

    proc = VideoProcessor(column="v", num_frames=3, fps=4.0, channels=1, mean=[0.0], std=[1.0])
    proc.fit(pd.DataFrame({"v": ["clip.mp4"]}), FitContext(root=tmp_path))
    frames = proc.process({"v": "clip.mp4"}, RowContext(root=tmp_path))["frames"]  # [3, 1, 28, 28] in [0, 1]
    assert nearest((frames.transpose(0, 2, 3, 1) * 255).round(), images) == [0, 2, 5]
    for bad in (0, -1.0, float("nan"), "2", True):
        with pytest.raises(ConfigError, match="fps: expected a positive number"):
            VideoProcessor(column="v", fps=bad)  # type: ignore[arg-type]

    gif = tmp_path / "clip.gif"  # animated images use their frame durations (here 100 ms each)
    frames = [Image.fromarray(i) for i in images]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert nearest(read_video(gif, channels=1, num_frames=3, fps=4.0), images) == [0, 2, 5]
    np.save(tmp_path / "clip.npy", np.stack(images))
    with pytest.raises(DataError, match="fps sampling needs frame times"):
        read_video(tmp_path / "clip.npy", fps=2.0)


def test_pixel_guards_apply_to_video_files(digits: Any, tmp_path: Path) -> None:
    path = write_clip(tmp_path / "long.mkv", digits[0][:20], "mkv-h264")
    with pytest.raises(DataError, match="refused before decoding"):
        read_video(path, max_pixels=100)  # one 28x28 frame is already too large
    # 16 x max_pixels = 12,800 pixels = 16 frames of 28x28 at most
    with pytest.raises(DataError, match="video too large: 20 frames of 28x28"):
        read_video(path, max_pixels=800)
    assert read_video(path, max_pixels=800, num_frames=8).shape == (8, 28, 28, 3)


def test_missing_pyav_says_what_to_install(digits: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_clip(tmp_path / "clip.mkv", digits[0][:3])
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(DataError, match=r"pip install polyfuse\[video\]"):
        read_video(path)
    np.save(tmp_path / "v.npy", np.zeros((2, 4, 4), np.uint8))
    assert read_video(tmp_path / "v.npy").shape == (2, 4, 4, 3)  # the other formats never import av


# --------------------------------------------------------------------------- broken files, per row


def broken_clips(directory: Path, images: list[np.ndarray]) -> dict[str, str]:
    """good / truncated (mp4 and webm cut in half) / not-a-video clips under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    write_clip(directory / "good.mp4", images[:6], "mp4-h264")
    for name, fmt in (("cut.mp4", "mp4-h264"), ("cut.webm", "webm-vp9")):
        whole = write_clip(directory / f"whole-{name}", images[:10], fmt).read_bytes()
        (directory / name).write_bytes(whole[: len(whole) // 2])
    (directory / "notes.mp4").write_text("these are my notes, not a video\n" * 40)
    Image.fromarray(images[0]).save(directory / "still.mp4", format="PNG")  # an image with a video name
    return {
        "cut.mp4": "cannot decode .mp4 video", "cut.webm": "truncated video",
        "notes.mp4": "cannot decode .mp4 video", "still.mp4": "not a video container",
    }


def test_broken_files_raise_a_data_error_naming_file_row_and_column(digits: Any, tmp_path: Path) -> None:
    expected = broken_clips(tmp_path, digits[0])
    proc = VideoProcessor(column="clip", num_frames=4, channels=1)
    proc.fit(pd.DataFrame({"clip": ["good.mp4"]}), FitContext(root=tmp_path, source="m.csv"))
    assert proc.process({"clip": "good.mp4"}, RowContext(root=tmp_path, source="m.csv", row=0))["frames"].shape == (4, 1, 28, 28)
    for row, (name, reason) in enumerate(expected.items(), start=1):
        with pytest.raises(DataError) as info:
            proc.process({"clip": name}, RowContext(root=tmp_path, source="m.csv", row=row))
        err = info.value
        assert (err.file, err.row, err.column) == ("m.csv", row, "clip")
        assert name in err.reason and reason in err.reason, err.reason
        assert str(err).startswith(f"m.csv, row {row}, column 'clip': {name}")
    with pytest.raises(DataError, match="truncated"):
        read_video(tmp_path / "cut.webm", fps=2.0)  # the time-based path checks the duration too


def _video_manifest(directory: Path, digits: Any, rows: int = 8) -> tuple[Path, dict[str, str]]:
    """A manifest with an .mp4 column: clip i holds 4 frames of digit image i; rows 2 and 5 are broken."""
    images, labels = digits
    data = directory / "data"
    expected = broken_clips(data, images)
    table = []
    for i in range(rows):
        frames = [np.roll(images[i], shift, axis=1) for shift in range(4)]
        write_clip(data / f"c{i}.mp4", frames, "mp4-h264")
        table.append({"clip": f"c{i}.mp4", "digit": labels[i]})
    table[2]["clip"], table[5]["clip"] = "cut.webm", "notes.mp4"
    path = data / "videos.csv"
    pd.DataFrame(table).to_csv(path, index=False)
    return path, expected


def test_the_data_report_lists_the_broken_rows_and_the_others_load(digits: Any, tmp_path: Path) -> None:
    from polyfuse.config import Config
    from polyfuse.data.prepare import prepare_data

    manifest, _ = _video_manifest(tmp_path, digits)
    config = Config.from_dict(_config(manifest, split={"valid": 0.0, "test": 0.0}))
    prepared = prepare_data(config, progress=False)
    dataset = prepared.datasets["train"]
    reported = {(e["row"], e["column"]) for e in prepared.report.entries}
    assert reported == {(2, "clip"), (5, "clip")}
    reasons = {e["row"]: e["reason"] for e in prepared.report.entries}
    assert "truncated video" in reasons[2] and "cannot decode .mp4 video" in reasons[5]
    for row in (0, 1, 3, 4, 6, 7):
        example = dataset[dataset.rows.index(row)]
        assert example.inputs["clip"]["frames"].shape == (4, 1, 28, 28)


def test_data_inspect_reports_duration_fps_and_size(digits: Any, tmp_path: Path) -> None:
    from polyfuse.cli import app

    manifest, _ = _video_manifest(tmp_path, digits)
    result = runner.invoke(app, ["data", "inspect", str(manifest), "-l", "digit", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    clip = next(c for c in data["columns"] if c["name"] == "clip")
    assert clip["role"] == "video"
    assert clip["files"]["formats"] == {"28x28 h264, 10 fps, 0.40 s, 4 frames": 6}
    problems = {p["row"]: p["reason"] for p in data["problems"] if p["column"] == "clip"}
    assert set(problems) == {2, 5} and "truncated video" in problems[2], problems
    text = runner.invoke(app, ["data", "inspect", str(manifest), "-l", "digit"], env={"COLUMNS": "200"})
    assert text.exit_code == 0 and "28x28 h264, 10 fps, 0.40 s, 4 frames (6)" in text.output, text.output


# --------------------------------------------------------------------------- training


def _config(manifest: Path, split: dict[str, float] | None = None) -> dict[str, Any]:
    """Tiny: one video input (4 gray 28x28 frames, per-frame LeNet, mean over time), dim 16, 1 epoch, 1 thread."""
    return {
        "name": "video-files",
        "data": {
            "train": str(manifest),
            "root": str(manifest.parent),
            "split": split or {"valid": 0.25, "test": 0.0},
            "inputs": {"clip": {"kind": "video", "column": "clip", "num_frames": 4, "channels": 1, "size": [28, 28]}},
            "batch_size": 4,
        },
        "model": {"dim": 16, "encoders": {"clip": {"name": "video_frames", "frame_encoder": "lenet"}}, "fusion": "concat"},
        "tasks": {"digit": {"column": "digit", "type": "classification"}},
        "train": {"epochs": 1, "progress": False, "seed": 0, "threads": 1},
    }


def test_train_one_epoch_on_an_mp4_column(digits: Any, tmp_path: Path) -> None:
    import polyfuse

    manifest, _ = _video_manifest(tmp_path, digits)
    start = time.perf_counter()
    result = polyfuse.fit(_config(manifest), out=tmp_path / "run")
    assert (result.path / "config.yaml").is_file()
    report = json.loads((result.path / "data_report.json").read_text())
    assert {e["row"] for e in report["entries"]} == {2, 5}
    with pytest.warns(PredictionProblemsWarning, match="notes.mp4"):
        predictions = result.predict(pd.read_csv(manifest).iloc[[0, 1, 5]], root=manifest.parent)
    assert len(predictions) == 3 and "digit" in predictions
    problems = predictions["problems"].fillna("").astype(str).tolist()
    assert problems[0] == problems[1] == "" and "notes.mp4" in problems[2]  # the unreadable clip is flagged
    assert time.perf_counter() - start < 120
