"""The server under load and abuse, on 127.0.0.1 only: concurrent clients with real AV-MNIST rows (no 5xx,
the same predictions as Predictor.predict), hypothesis-built malformed requests (never a 5xx), and bodies
over the limit refused before they are read whole (raw sockets)."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import polyfuse
from polyfuse.serve.app import create_app
from polyfuse.serve.requests import MB, FieldSpec, RequestError, check_value
from test_serve import assert_same, files_of, json_of, metric_value, serving  # tests/ is on sys.path

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

MAX_BODY_MB = 0.25
MAX_FILE_MB = 0.05
CLIENTS, REQUESTS = 8, 10
FUZZ_KINDS = ("json_inputs", "json_any", "raw", "multipart", "urlencoded", "elsewhere")
FUZZ_EXAMPLES = 20  # per kind: 120 requests in all


@pytest.fixture(scope="module")
def rows(avmnist: Any) -> pd.DataFrame:
    """20 real test rows; every fourth has its image missing, row 6 its audio."""
    frame = pd.read_csv(avmnist.test).head(20)[["audio", "image"]].astype(object).reset_index(drop=True)
    frame.loc[frame.index % 4 == 1, "image"] = None
    frame.loc[6, "audio"] = None
    return frame


@pytest.fixture(scope="module")
def expected(run: Path, rows: pd.DataFrame, avmnist: Any) -> pd.DataFrame:
    return polyfuse.load(run).predict(rows, root=avmnist.root)


@pytest.fixture(scope="module")
def url(run: Path) -> Iterator[str]:
    """One live server for the module, with a short batch window so concurrent rows share forward passes."""
    app = create_app(run, max_body_mb=MAX_BODY_MB, max_file_mb=MAX_FILE_MB, batch_window_ms=2)
    with serving(app) as base:
        yield base


def server_errors(metrics: str) -> float:
    """Requests the server answered with a 5xx, on any path, from the Prometheus text."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("polyfuse_http_requests_total{") and re.search(r'status="5\d\d"', line)
    )


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


# --------------------------------------------------------------------------- load


def test_concurrent_clients_get_the_predictors_answers_and_no_5xx(
    url: str, rows: pd.DataFrame, expected: pd.DataFrame, avmnist: Any
) -> None:
    """8 clients x 10 requests at once, multipart and JSON alternating, over 20 real rows."""
    start = threading.Barrier(CLIENTS)

    def client_session(client_id: int) -> list[tuple[int, bool, int, dict[str, Any], float]]:
        outcomes = []
        with httpx.Client(base_url=url, timeout=60) as client:
            start.wait(timeout=30)
            for j in range(REQUESTS):
                i = (client_id * REQUESTS + j) % len(rows)
                as_json = (client_id + j) % 2 == 0
                began = time.perf_counter()
                if as_json:
                    response = client.post("/predict", json=json_of(rows.iloc[i], avmnist.root))
                else:
                    response = client.post("/predict", files=files_of(rows.iloc[i], avmnist.root))
                elapsed = time.perf_counter() - began
                body = response.json() if response.status_code == 200 else {"text": response.text}
                outcomes.append((i, as_json, response.status_code, body, elapsed))
        return outcomes

    with httpx.Client(base_url=url, timeout=30) as client:
        before = client.get("/metrics").text
    with ThreadPoolExecutor(CLIENTS) as pool:
        outcomes = [o for session in pool.map(client_session, range(CLIENTS)) for o in session]
    with httpx.Client(base_url=url, timeout=30) as client:
        after = client.get("/metrics").text

    assert len(outcomes) == CLIENTS * REQUESTS
    assert [o for o in outcomes if o[2] != 200] == []
    for i, as_json, _, body, _ in outcomes:
        assert_same(body, expected, i)
        missing = [column for column in ("audio", "image") if not isinstance(rows[column][i], str)]
        assert body["missing"] == missing, (i, as_json)
    assert {o[1] for o in outcomes} == {True, False}  # both encodings were sent
    ok = metric_value(after, "polyfuse_http_requests_total", path="/predict", status="200") - metric_value(
        before, "polyfuse_http_requests_total", path="/predict", status="200"
    )
    assert ok == CLIENTS * REQUESTS and server_errors(after) == server_errors(before)
    rows_batched = metric_value(after, "polyfuse_batch_rows_sum") - metric_value(before, "polyfuse_batch_rows_sum")
    assert rows_batched == CLIENTS * REQUESTS
    latencies = np.array([o[4] for o in outcomes]) * 1000
    passes = metric_value(after, "polyfuse_batch_rows_count") - metric_value(before, "polyfuse_batch_rows_count")
    print(
        f"\n{CLIENTS} clients x {REQUESTS} requests: p50 {np.percentile(latencies, 50):.1f} ms, "
        f"p99 {np.percentile(latencies, 99):.1f} ms, {rows_batched / max(passes, 1):.2f} rows per forward pass"
    )


# --------------------------------------------------------------------------- fuzz

FIELD_NAMES = st.sampled_from(["audio", "image"]) | st.text(
    st.characters(codec="ascii", categories=["L", "N", "P"]), min_size=1, max_size=12
)
SCALARS = (
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=24)
)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=24,
)
TOKEN = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True)
HEADER_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)
CONTENT_TYPES = st.sampled_from([
    "application/json", "application/json; charset=latin-1", "multipart/form-data",
    "multipart/form-data; boundary=xyz", "multipart/form-data; boundary=", "application/x-www-form-urlencoded",
    "text/plain", "application/octet-stream", "image/png", "",
]) | TOKEN.map(lambda t: f"{t}/{t}")
RESERVED_HEADERS = {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade", "te", "trailer"}


@st.composite
def mutated(draw: st.DrawFn, blobs: list[bytes]) -> bytes:
    """A real file cut, overwritten or spliced in a few places (decoders meet near-valid input)."""
    blob = bytearray(draw(st.sampled_from(blobs)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(blob)))
        op = draw(st.sampled_from(["cut", "overwrite", "insert"]))
        if op == "cut":
            del blob[pos:]
        elif op == "overwrite":
            patch = draw(st.binary(min_size=1, max_size=8))
            blob[pos : pos + len(patch)] = patch
        else:
            blob[pos:pos] = draw(st.binary(max_size=64))
    return bytes(blob)


@st.composite
def abusive_request(draw: st.DrawFn, blobs: list[bytes], kind: str) -> dict[str, Any]:
    """httpx.request kwargs of one ``kind``: malformed /predict bodies of every shape, odd headers, paths and methods."""
    payload = draw(st.binary(max_size=1024) | mutated(blobs) | st.sampled_from(blobs))
    file_value = st.builds(
        lambda data, name: {"base64": base64.b64encode(data).decode(), "filename": name}, st.just(payload), st.text(max_size=12)
    ) | st.dictionaries(st.sampled_from(["base64", "filename", "x"]), JSON_VALUES, max_size=3)
    headers = draw(st.dictionaries(TOKEN.filter(lambda t: t.lower() not in RESERVED_HEADERS), HEADER_VALUE, max_size=3))
    request: dict[str, Any] = {"method": "POST", "url": "/predict", "headers": headers}
    if kind == "json_inputs":
        inputs = draw(st.dictionaries(FIELD_NAMES, JSON_VALUES | file_value, max_size=3))
        body: Any = {"inputs": inputs, **draw(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=1))}
        headers["content-type"] = draw(st.sampled_from(["application/json", "application/json; charset=utf-8"]))
        request["content"] = json.dumps(body, allow_nan=True).encode()
    elif kind == "json_any":
        headers["content-type"] = "application/json"
        request["content"] = json.dumps(draw(JSON_VALUES), allow_nan=True).encode()
    elif kind == "raw":
        headers["content-type"] = draw(CONTENT_TYPES)
        request["content"] = draw(st.binary(max_size=2048) | st.just(payload))
    elif kind == "multipart":
        parts = draw(st.lists(
            st.tuples(FIELD_NAMES, st.tuples(st.none() | st.text(max_size=12), st.just(payload) | st.binary(max_size=256))),
            min_size=1, max_size=4,
        ))
        request["files"] = parts
    elif kind == "urlencoded":
        request["data"] = draw(st.dictionaries(FIELD_NAMES, st.text(max_size=64), min_size=1, max_size=4))
    elif kind == "elsewhere":
        request["method"] = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
        request["url"] = draw(
            st.sampled_from(["/predict", "/health", "/metadata", "/metrics", "/", "/docs", "/openapi.json"])
            | st.text(st.characters(codec="ascii", categories=["L", "N"], include_characters="-._~/%"), max_size=30).map(lambda p: "/" + p)
        )
        if request["method"] not in ("GET", "HEAD"):
            request["content"] = payload
    else:
        raise ValueError(f"unknown request kind {kind!r}")
    return request


@pytest.mark.parametrize("kind", FUZZ_KINDS)
def test_fuzzed_requests_never_get_a_5xx(url: str, rows: pd.DataFrame, avmnist: Any, kind: str) -> None:
    """Hypothesis-built bad requests over loopback: every answer is < 500, and the server keeps serving."""
    blobs = [(avmnist.root / rows[column][0]).read_bytes() for column in ("audio", "image")]
    seen: dict[int, int] = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        before = client.get("/metrics").text

        @settings(
            max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(request=abusive_request(blobs, kind))
        def one(request: dict[str, Any]) -> None:
            response = client.request(**request)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (request, response.status_code, response.text[:300])
            if response.status_code == 200 and request["url"] == "/predict" and request["method"] == "POST":
                assert "predictions" in response.json()

        one()
        assert client.get("/health").status_code == 200
        good = client.post("/predict", files=files_of(rows.iloc[0], avmnist.root))
        assert good.status_code == 200 and "predictions" in good.json()
        assert server_errors(client.get("/metrics").text) == server_errors(before)
    assert sum(seen.values()) >= FUZZ_EXAMPLES // 2, seen
    print(f"\nfuzz {kind}: statuses {dict(sorted(seen.items()))}")


def test_deeply_nested_json_is_a_400_not_a_500(url: str) -> None:
    """json.loads raises RecursionError (not ValueError) on deep nesting; it was a 500."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for body in (b"[" * 100_000, b'{"inputs": {"audio": ' + b"[" * 5000 + b"]" * 5000 + b"}}"):
            response = client.post("/predict", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 400 and "not valid JSON" in response.json()["detail"], response.text
        assert client.get("/health").status_code == 200


@settings(max_examples=200, deadline=None, database=None)
@given(
    value=JSON_VALUES | st.integers(min_value=2**1024) | st.integers(max_value=-(2**1024)) | st.binary(max_size=16),
    which=st.integers(0, 4),
)
def test_field_checks_raise_only_request_errors(value: Any, which: int) -> None:
    """Any JSON value (integers beyond float range too) for any field role is accepted or refused with a 4xx."""
    spec = [
        FieldSpec("caption", "caption", "text", "text"),
        FieldSpec("age", "tab", "tabular", "number"),
        FieldSpec("city", "tab", "tabular", "category"),
        FieldSpec("frames", "frames", "sequence", "file"),
        FieldSpec("photo", "photo", "image", "file"),
    ][which]
    try:
        check_value(spec, value, 100)
    except RequestError as exc:
        assert 400 <= exc.status < 500 and exc.field == spec.name


def test_inline_frames_beyond_float_range_are_refused_by_field(run: Path) -> None:
    client = TestClient(create_app(run), raise_server_exceptions=False)  # its own app: a 500 here stays here
    response = client.post("/predict", json={"inputs": {"audio": [[10**400] * 13]}})
    assert response.status_code == 422 and response.json()["field"] == "audio", response.status_code


# --------------------------------------------------------------------------- bodies over the limit


def raw_exchange(port: int, head: bytes, body_chunks: Iterable[bytes] = (), wait_s: float = 10.0) -> tuple[bytes, bytes, int]:
    """Send ``head`` then chunks until the server answers (or they run out): its head, its body, the bytes sent."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # answered already: stop sending
            try:
                sock.sendall(chunk)
            except OSError:  # the server closed the connection
                break
            sent += len(chunk)
        answer = b""
        deadline = time.monotonic() + wait_s
        with contextlib.suppress(OSError):  # a timeout or a reset: whatever arrived is the answer
            while time.monotonic() < deadline:
                if b"\r\n\r\n" in answer:
                    found = re.search(rb"(?im)^content-length: *(\d+)", answer)
                    if len(answer.split(b"\r\n\r\n", 1)[1]) >= (int(found.group(1)) if found else 0):
                        break
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        response_head, _, response_body = answer.partition(b"\r\n\r\n")
        return response_head, response_body, sent


def status_of(response_head: bytes) -> int:
    assert response_head.startswith(b"HTTP/1.1 "), response_head[:200]
    return int(response_head.split(b" ", 2)[1])


def test_declared_content_length_over_the_limit_is_refused_without_the_body(url: str) -> None:
    """413 from the header alone: the client never sends a byte of its 100 MB body."""
    head = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (100 * MB)
    )
    began = time.monotonic()
    response_head, response_body, _ = raw_exchange(port_of(url), head)
    assert status_of(response_head) == 413 and b"limit" in response_body, (response_head, response_body)
    assert time.monotonic() - began < 5  # answered at once, not after a wait for the body
    assert httpx.get(url + "/health", timeout=30).status_code == 200


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data; boundary=b"])
def test_streamed_body_over_the_limit_is_refused_before_it_ends(url: str, content_type: str) -> None:
    """A chunked body (no Content-Length) passing the limit gets 413 though its last chunk is never sent."""
    limit = int(MAX_BODY_MB * MB)
    head = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
        % content_type.encode()
    )
    first = b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n' if "multipart" in content_type else b""

    def chunks() -> Iterator[bytes]:
        if first:
            yield b"%x\r\n%s\r\n" % (len(first), first)
        filler = (b"\0" if first else b" ") * 16384
        for _ in range(limit // len(filler) + 4):  # past the limit; the terminating 0-chunk never follows
            yield b"%x\r\n%s\r\n" % (len(filler), filler)

    with httpx.Client(base_url=url, timeout=30) as client:
        before = client.get("/metrics").text
        response_head, response_body, sent = raw_exchange(port_of(url), head, chunks())
        assert status_of(response_head) == 413 and b"limit" in response_body, (response_head, response_body)
        after = client.get("/metrics").text
        assert client.get("/health").status_code == 200
    refused = metric_value(after, "polyfuse_http_requests_total", path="/predict", status="413") - metric_value(
        before, "polyfuse_http_requests_total", path="/predict", status="413"
    )
    assert refused == 1 and server_errors(after) == server_errors(before) and sent > limit


def test_client_leaving_mid_body_is_not_counted_as_a_server_error(url: str) -> None:
    """A body cut short by the client (it disconnects) is a 499 in the metrics, never a 500."""
    head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    with httpx.Client(base_url=url, timeout=30) as client:
        before = client.get("/metrics").text
        with socket.create_connection(("127.0.0.1", port_of(url)), timeout=10) as sock:
            sock.sendall(head + b'{"inputs": ')
            time.sleep(0.2)  # the app is now waiting for the rest of the body
        deadline = time.monotonic() + 10
        while True:
            after = client.get("/metrics").text
            gone = metric_value(after, "polyfuse_http_requests_total", path="/predict", status="499") - metric_value(
                before, "polyfuse_http_requests_total", path="/predict", status="499"
            )
            if gone or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert gone == 1 and server_errors(after) == server_errors(before)
        assert client.get("/health").status_code == 200
