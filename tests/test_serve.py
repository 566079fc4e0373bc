"""The HTTP server end to end: uvicorn on 127.0.0.1, real AV-MNIST rows as multipart and as JSON base64,
the same predictions as Predictor.predict, bad requests refused by field, limits, metrics, micro-batching."""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from fastapi.testclient import TestClient

import polyfuse
from polyfuse.serve.app import create_app

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

MAX_BODY_MB = 0.25
MAX_FILE_MB = 0.05


@pytest.fixture(scope="module")
def rows(avmnist) -> pd.DataFrame:
    """Four real test rows; row 1 has its image missing."""
    frame = pd.read_csv(avmnist.test).head(4)[["audio", "image"]].astype(object)
    frame.loc[1, "image"] = None
    return frame


@pytest.fixture(scope="module")
def expected(run: Path, rows: pd.DataFrame, avmnist) -> pd.DataFrame:
    return polyfuse.load(run).predict(rows, root=avmnist.root)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """uvicorn in a thread on a free local port; stopped on exit."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def url(run: Path) -> Iterator[str]:
    app = create_app(run, max_body_mb=MAX_BODY_MB, max_file_mb=MAX_FILE_MB)
    with serving(app) as base:
        yield base


def files_of(row: pd.Series, root: Path) -> dict:
    files = {}
    for column, name in (("audio", "a.npy"), ("image", "x.png")):
        if isinstance(row[column], str):
            files[column] = (name, (root / row[column]).read_bytes())
    return files


def json_of(row: pd.Series, root: Path) -> dict:
    inputs = {}
    for column in ("audio", "image"):
        if isinstance(row[column], str):
            inputs[column] = {"base64": base64.b64encode((root / row[column]).read_bytes()).decode(), "filename": row[column]}
    return {"inputs": inputs}


def assert_same(response: dict, expected: pd.DataFrame, i: int) -> None:
    got = response["predictions"]["digit"]
    assert got["label"] == expected["digit"][i]
    for cls, p in got["probabilities"].items():
        assert p == pytest.approx(expected[f"digit:p:{cls}"][i], abs=1e-5)


def metric_value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_predict_multipart_and_json_match_predictor(url: str, rows: pd.DataFrame, expected: pd.DataFrame, avmnist) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for i, row in rows.iterrows():
            multipart = client.post("/predict", files=files_of(row, avmnist.root))
            assert multipart.status_code == 200, multipart.text
            assert_same(multipart.json(), expected, i)
            as_json = client.post("/predict", json=json_of(row, avmnist.root))
            assert as_json.status_code == 200, as_json.text
            assert_same(as_json.json(), expected, i)
            assert as_json.json()["missing"] == ([] if i != 1 else ["image"])
        assert multipart.json()["problems"] == []
        missing = client.post("/predict", json=json_of(rows.iloc[1], avmnist.root)).json()
        assert missing["missing"] == ["image"] and missing["problems"] == ["image: empty value"]


def test_health_and_metadata(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/health").json()["status"] == "ok"
        meta = client.get("/metadata").json()
    assert meta["polyfuse_version"] == polyfuse.__version__ and meta["backend"] == "torch"
    assert {i["name"]: i["kind"] for i in meta["inputs"]} == {"audio": "sequence", "image": "image"}
    assert [f["name"] for i in meta["inputs"] for f in i["fields"]] == ["audio", "image"]
    assert meta["tasks"]["digit"] == {"type": "classification", "classes": list(range(10))}
    assert "acc" in meta["metrics"]["test"]["digit"]
    assert meta["limits"]["max_body_mb"] == MAX_BODY_MB


def test_bad_requests_are_refused_by_field_and_the_server_keeps_serving(url: str, rows: pd.DataFrame, avmnist) -> None:
    good_audio = (avmnist.root / rows["audio"][0]).read_bytes()
    good_png = (avmnist.root / rows["image"][0]).read_bytes()
    with httpx.Client(base_url=url, timeout=30) as client:
        before = client.get("/metrics").text
        cases = [
            # (response, status, field, words in the message)
            (client.post("/predict", json={"inputs": {"image": 123}}), 422, "image", "got int"),
            (client.post("/predict", files={"image": ("x.png", good_png[: len(good_png) // 2])}), 422, "image", "corrupt"),
            (client.post("/predict", files={"image": ("x.png", b"not an image at all")}), 422, "image", "cannot"),
            (client.post("/predict", json={"inputs": {"image": "image/2923.png"}}), 422, "image", "never reads files by path"),
            (client.post("/predict", data={"audio": "/etc/passwd"}), 422, "audio", "never reads files by path"),
            (client.post("/predict", json={"inputs": {"image": {"base64": "@@not base64@@"}}}), 422, "image", "base64"),
            (client.post("/predict", json={"inputs": {"caption": "hi"}}), 422, "caption", "not an input"),
            (client.post("/predict", files={"image": ("x.png", b"\0" * int(MAX_FILE_MB * 1024 * 1024 + 10))}), 413, "image", "limit"),
            (client.post("/predict", content=b"{" + b" " * int(MAX_BODY_MB * 1024 * 1024), headers={"content-type": "application/json"}), 413, None, "limit"),
            (client.post("/predict", content=b"audio=1", headers={"content-type": "text/plain"}), 415, None, "Content-Type"),
            (client.post("/predict", content=b"{oops", headers={"content-type": "application/json"}), 400, None, "JSON"),
        ]

        def chunks():  # no Content-Length: the limit applies while the body streams in
            for _ in range(40):
                yield b" " * 16384

        cases.append((client.post("/predict", content=chunks(), headers={"content-type": "application/json"}), 413, None, "limit"))
        for response, status, field, words in cases:
            assert response.status_code == status, (response.status_code, response.text)
            body = response.json()
            assert words in body["detail"], body
            if field is not None:
                assert body["field"] == field and repr(field) in body["detail"]
        assert client.get("/health").status_code == 200
        ok = client.post("/predict", files={"audio": ("a.npy", good_audio)})
        assert ok.status_code == 200 and ok.json()["missing"] == ["image"]
        after = client.get("/metrics").text
    for status, count in (("422", 7), ("413", 3), ("415", 1), ("400", 1)):
        delta = metric_value(after, "polyfuse_http_requests_total", path="/predict", status=status) - metric_value(
            before, "polyfuse_http_requests_total", path="/predict", status=status
        )
        assert delta == count, status
    assert metric_value(after, "polyfuse_http_request_duration_seconds_count", path="/predict") > 0
    assert "# TYPE polyfuse_http_request_duration_seconds histogram" in after


def test_concurrent_requests_share_a_forward_pass(run: Path, rows: pd.DataFrame, expected: pd.DataFrame, avmnist) -> None:
    app = create_app(run, batch_window_ms=400)
    with serving(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        before = client.get("/metrics").text
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda i: client.post("/predict", files=files_of(rows.iloc[i], avmnist.root)), range(4)))
        after = client.get("/metrics").text
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        assert_same(response.json(), expected, i)
    passes = metric_value(after, "polyfuse_batch_rows_count") - metric_value(before, "polyfuse_batch_rows_count")
    batched = metric_value(after, "polyfuse_batch_rows_sum") - metric_value(before, "polyfuse_batch_rows_sum")
    assert batched == 4 and passes < 4  # at least two requests went through one forward pass


def test_onnx_backend_gives_the_same_predictions(run: Path, rows: pd.DataFrame, expected: pd.DataFrame, avmnist) -> None:
    client = TestClient(create_app(run, onnx=True))
    assert client.get("/health").json()["backend"] == "onnx"
    for i, row in rows.iterrows():
        response = client.post("/predict", files=files_of(row, avmnist.root))
        assert response.status_code == 200, response.text
        assert_same(response.json(), expected, i)
    bad = client.post("/predict", json={"inputs": {"audio": "audio/0.npy"}})
    assert bad.status_code == 422 and bad.json()["field"] == "audio"
    probs = np.array(list(response.json()["predictions"]["digit"]["probabilities"].values()))
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_field_values_are_checked_by_role() -> None:
    from polyfuse.serve.requests import FieldSpec, RequestError, check_value

    text = FieldSpec("caption", "caption", "text", "text")
    number = FieldSpec("age", "tab", "tabular", "number")
    category = FieldSpec("city", "tab", "tabular", "category")
    sequence = FieldSpec("frames", "frames", "sequence", "file")
    assert check_value(text, "a cat", 100) == "a cat"
    assert check_value(number, "3.5", 100) == 3.5 and check_value(number, 2, 100) == 2.0 and check_value(number, " ", 100) is None
    assert check_value(category, 7, 100) == 7 and check_value(text, None, 100) is None
    assert check_value(sequence, [[1.0, 2.0]], 100) == [[1.0, 2.0]]  # inline frames are values, not paths
    assert check_value(sequence, {"base64": base64.b64encode(b"abc").decode()}, 100) == b"abc"
    for spec, value, status, words in [
        (text, 5, 422, "expected text"),
        (number, "ten", 422, "expected a number"),
        (number, True, 422, "expected a number"),
        (category, {"a": 1}, 422, "expected a category"),
        (sequence, "frames/1.npy", 422, "never reads files by path"),
        (sequence, {"base64": base64.b64encode(b"x" * 200).decode()}, 413, "limit"),
    ]:
        with pytest.raises(RequestError) as caught:
            check_value(spec, value, 100)
        assert caught.value.status == status and words in caught.value.message and caught.value.field == spec.name


def test_serve_cli_runs_uvicorn_with_the_options(run: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from polyfuse.cli import app as cli

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    result = CliRunner().invoke(cli, ["serve", str(run), "--port", "8123", "--batch-window-ms", "5", "--max-file-mb", "1"])
    assert result.exit_code == 0, result.output
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    assert seen["app"].state.engine.backend == "torch" and "http://127.0.0.1:8123" in result.output
    bad = CliRunner().invoke(cli, ["serve", str(run), "--max-body-mb", "0"])
    assert bad.exit_code == 2 and "--max-body-mb" in bad.output
