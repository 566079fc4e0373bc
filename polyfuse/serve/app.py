"""The HTTP server: ``create_app(ckpt) -> FastAPI`` with /predict, /health, /metadata, /metrics and a
page at / to try the model in a browser (``polyfuse.serve.page``). ``/predict?explain=true`` adds the
row's per-input explanation (``polyfuse.explain``).

``POST /predict`` takes one row, either as ``multipart/form-data`` (file uploads for image,
audio, sequence and video inputs; form fields for text, numbers and categories) or as JSON
``{"inputs": {...}}`` with files as ``{"base64": "...", "filename": "x.png"}``. Fields are the
manifest columns the model reads (``GET /metadata`` lists them). Any input may be absent: it is
then marked missing. Files are never read by path: a string where a file is expected is refused.

Limits: the body (413 from its Content-Length, or as soon as the streamed bytes pass the limit,
before it is read whole), each file (413), wrong types and unreadable files (422, naming the
field), other media types (415). A bad request never stops the server.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, Sequence

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.requests import ClientDisconnect

from polyfuse._version import __version__
from polyfuse.deploy.rows import FILE_KINDS
from polyfuse.serve.batching import MicroBatcher
from polyfuse.serve.metrics import MetricsMiddleware, ServerMetrics

MB = 1024 * 1024
PATHS = ("/", "/predict", "/health", "/metadata", "/metrics")


# --------------------------------------------------------------------------- the model behind the server


@dataclass
class Engine:
    """What the server needs from a model, PyTorch (``Predictor``) or ONNX Runtime (``OnnxPredictor``)."""

    backend: str  # torch | onnx
    pipeline: Any
    tasks: dict[str, str]  # task -> type
    classes: dict[str, list[Any]]
    inputs: dict[str, str]  # input -> kind
    metrics: dict[str, Any]
    predict_batch: Callable[[Mapping[str, Any]], Mapping[str, np.ndarray]]
    source: str
    keep: list[Any] = field(default_factory=list)  # objects that must live as long as the engine (temp dirs)
    # batch -> ({task: {input: [B] contribution}}, fusion weight per input [B] or None); see polyfuse.explain
    explain_batch: Callable[[Mapping[str, Any]], tuple[Any, Any]] | None = None

    def explain(self, batch: Mapping[str, Any]) -> tuple[Any, Any]:
        """Per-row, per-input contributions (and the fusion's weights where it has them) of one batch."""
        if self.explain_batch is not None:
            return self.explain_batch(batch)
        from polyfuse.explain import explain_batch

        return explain_batch(self.predict_batch, batch, self.tasks, list(self.inputs)), None


def load_engine(ckpt: str | Path, *, onnx: bool = False) -> Engine:
    """A folder from ``polyfuse export`` serves with ONNX Runtime; a checkpoint with PyTorch, or with
    ONNX Runtime after an export to a temporary folder when ``onnx`` is set."""
    from polyfuse.deploy.onnx_predictor import META_FILE

    ckpt = Path(ckpt)
    keep: list[Any] = []
    if not (ckpt / META_FILE).is_file() and onnx:
        from polyfuse.deploy.export import export_checkpoint

        tmp = tempfile.TemporaryDirectory(prefix="polyfuse-serve-")
        keep.append(tmp)
        export_checkpoint(ckpt, tmp.name)
        onnx_dir: Path | None = Path(tmp.name)
    else:
        onnx_dir = ckpt if (ckpt / META_FILE).is_file() else None
    if onnx_dir is not None:
        from polyfuse.deploy.onnx_predictor import OnnxPredictor

        predictor = OnnxPredictor(onnx_dir)
        tasks = dict(predictor.tasks)
        return Engine(
            "onnx", predictor.pipeline, tasks, {t: predictor.classes(t) for t in tasks}, dict(predictor.inputs),
            predictor.metrics, predictor.predict_batch, str(ckpt), keep,
        )
    from polyfuse.predictor import Predictor

    torch_predictor = Predictor.load(ckpt)
    if torch_predictor.pipeline is None:
        from polyfuse.errors import CheckpointError

        raise CheckpointError(f"{ckpt}: no pipeline/ folder; the server needs the fitted preprocessing")
    tasks = {name: task.type for name, task in torch_predictor.config.tasks.items()}
    from polyfuse.tasks import TASKS, deployable_types

    unsupported = [t for t, kind in tasks.items() if not TASKS[kind].deployable]
    if unsupported:
        from polyfuse.errors import PolyfuseError

        raise PolyfuseError(f"{ckpt}: task(s) {unsupported} are not served ({', '.join(deployable_types())} only)")
    classes = {t: (torch_predictor.classes(t) if TASKS[kind].has_classes else []) for t, kind in tasks.items()}
    return Engine(
        "torch", torch_predictor.pipeline, tasks, classes, dict(torch_predictor.inputs), torch_predictor.metrics,
        torch_predictor.predict_batch, str(ckpt), keep,
        explain_batch=lambda batch: torch_predictor.explain_batch(batch)[1:],
    )


# --------------------------------------------------------------------------- request fields


@dataclass(frozen=True)
class FieldSpec:
    """One request field = one manifest column of an input."""

    name: str
    input: str
    kind: str  # the input's kind
    role: str  # file | text | number | category

    def describe(self) -> str:
        return {
            "file": "a file: multipart upload, or JSON {\"base64\": ..., \"filename\": ...}"
            + (" (or an inline list of frames)" if self.kind == "sequence" else ""),
            "text": "text",
            "number": "a number",
            "category": "a category (text or number)",
        }[self.role]


def request_fields(pipeline: Any) -> dict[str, FieldSpec]:
    """Field name -> what it holds, from the pipeline's processors."""
    fields: dict[str, FieldSpec] = {}
    for name, proc in pipeline.processors.items():
        kind = pipeline.kinds.get(name, proc.kind)
        for column in proc.columns:
            if kind in FILE_KINDS:
                role = "file"
            elif kind == "tabular":
                role = "number" if column in getattr(proc, "numeric", []) else "category"
            else:
                role = "text"
            fields[column] = FieldSpec(column, name, kind, role)
    return fields


class RequestError(Exception):
    """A bad request: HTTP ``status`` and a message naming the field."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


class BodyTooLarge(RequestError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the limit of {limit / MB:g} MB")


def _looks_like_path(text: str) -> str:
    return (
        f"got the string {text[:80]!r}; the server never reads files by path: upload the file "
        "(multipart/form-data) or send {\"base64\": ..., \"filename\": ...} in JSON"
    )


def check_value(spec: FieldSpec, value: Any, max_file: int) -> Any:
    """A JSON or form value for ``spec`` -> the cell given to the pipeline (bytes for files); RequestError otherwise."""
    name = spec.name
    if value is None:
        return None
    if spec.role == "file":
        if isinstance(value, Mapping):
            encoded = value.get("base64")
            if not isinstance(encoded, str):
                raise RequestError(422, f"field {name!r}: expected {{\"base64\": \"...\"}} with a base64 string", name)
            if len(encoded) * 3 // 4 > max_file + 3:
                raise RequestError(413, f"field {name!r}: file larger than the limit of {max_file / MB:g} MB", name)
            try:
                data = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise RequestError(422, f"field {name!r}: not valid base64", name) from None
            if len(data) > max_file:
                raise RequestError(413, f"field {name!r}: file larger than the limit of {max_file / MB:g} MB", name)
            return data or None
        if isinstance(value, (bytes, bytearray)):
            return bytes(value) or None
        if spec.kind == "sequence" and isinstance(value, list):
            return value  # inline frames
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return None
            if spec.kind == "sequence" and text.startswith("["):
                return text  # inline frames as a JSON list
            raise RequestError(422, f"field {name!r}: {_looks_like_path(text)}", name)
        raise RequestError(422, f"field {name!r}: expected {spec.describe()}, got {type(value).__name__}", name)
    if spec.role == "text":
        if not isinstance(value, str):
            raise RequestError(422, f"field {name!r}: expected text, got {type(value).__name__}", name)
        return value
    if spec.role == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise RequestError(422, f"field {name!r}: expected a number, got {type(value).__name__}", name)
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                number = float(value)
            except ValueError:
                raise RequestError(422, f"field {name!r}: expected a number, got {value[:80]!r}", name) from None
        else:
            try:
                number = float(value)
            except OverflowError:  # a JSON integer beyond float range
                raise RequestError(422, f"field {name!r}: number out of range", name) from None
        if math.isinf(number):
            raise RequestError(422, f"field {name!r}: infinite value", name)
        return number
    if isinstance(value, (str, int, float, bool)):
        return value
    raise RequestError(422, f"field {name!r}: expected {spec.describe()}, got {type(value).__name__}", name)


def _unknown(name: str, fields: Mapping[str, FieldSpec]) -> RequestError:
    return RequestError(422, f"field {name!r} is not an input of this model; fields: {', '.join(fields)}", name)


async def read_form(request: Request, fields: Mapping[str, FieldSpec], max_file: int) -> dict[str, Any]:
    from starlette.datastructures import UploadFile

    form = await request.form(max_files=len(fields) + 1, max_fields=len(fields) + 8, max_part_size=max_file)
    values: dict[str, Any] = {}
    try:
        for name, value in form.multi_items():
            if name not in fields:
                raise _unknown(name, fields)
            if name in values:
                raise RequestError(422, f"field {name!r} given more than once", name)
            spec = fields[name]
            if isinstance(value, UploadFile):
                if spec.role != "file":
                    raise RequestError(422, f"field {name!r}: expected {spec.describe()}, got a file upload", name)
                if value.size is not None and value.size > max_file:
                    raise RequestError(413, f"field {name!r}: file larger than the limit of {max_file / MB:g} MB", name)
                data = await value.read(max_file + 1)
                if len(data) > max_file:
                    raise RequestError(413, f"field {name!r}: file larger than the limit of {max_file / MB:g} MB", name)
                values[name] = data or None
            else:
                values[name] = check_value(spec, value, max_file)
    finally:
        await form.close()
    return values


async def read_json(request: Request, fields: Mapping[str, FieldSpec], max_file: int) -> dict[str, Any]:
    body = await request.body()
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise RequestError(400, f"the body is not valid JSON ({exc})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), dict):
        raise RequestError(422, "expected a JSON object {\"inputs\": {field: value, ...}}", "inputs")
    unknown_keys = [k for k in payload if k != "inputs"]
    if unknown_keys:
        raise RequestError(422, f"unknown key {unknown_keys[0]!r}; the body holds only \"inputs\"", unknown_keys[0])
    values = {}
    for name, value in payload["inputs"].items():
        if name not in fields:
            raise _unknown(name, fields)
        values[name] = check_value(fields[name], value, max_file)
    return values


# --------------------------------------------------------------------------- body limit


class BodyLimitMiddleware:
    """413 when Content-Length says the body is too large (nothing read), or as soon as the streamed
    body passes the limit (chunked uploads, lying headers)."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Callable[..., Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                too_large = False
            if too_large:
                response = _error_response(BodyTooLarge(self.max_bytes))
                await response(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)


def _error_response(exc: RequestError) -> JSONResponse:
    body: dict[str, Any] = {"detail": exc.message}
    if exc.field is not None:
        body["field"] = exc.field
    return JSONResponse(body, status_code=exc.status)


# --------------------------------------------------------------------------- predictions


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def row_result(preds: Mapping[str, np.ndarray], i: int, tasks: Mapping[str, str], classes: Mapping[str, list[Any]]) -> dict[str, Any]:
    """One row's predictions per task, as its task type writes them (label / labels + probabilities, value)."""
    from polyfuse.tasks import TASKS

    return {task: TASKS[kind].json_result(np.asarray(preds[task][i], dtype=np.float64), classes.get(task, [])) for task, kind in tasks.items()}


def _flag(value: str | None, name: str) -> bool:
    """A query flag: absent/false/0/no -> False, true/1/yes -> True; anything else is a 422 naming it."""
    if value is None:
        return False
    text = value.strip().lower()
    if text in ("", "0", "false", "no"):
        return False
    if text in ("1", "true", "yes"):
        return True
    raise RequestError(422, f"query parameter {name!r}: expected true or false, got {value[:40]!r}", name)


def create_app(
    ckpt: str | Path,
    *,
    onnx: bool = False,
    max_body_mb: float = 20.0,
    max_file_mb: float = 10.0,
    batch_window_ms: float = 0.0,
    max_batch: int = 64,
) -> FastAPI:
    """The FastAPI app serving the model in ``ckpt`` (a checkpoint, or a ``polyfuse export`` folder)."""
    from polyfuse.data.processors.base import EMPTY, RowContext
    from polyfuse.data.report import STAGE_INPUT
    from polyfuse.errors import PolyfuseError

    if max_body_mb <= 0 or max_file_mb <= 0:
        raise PolyfuseError("--max-body-mb and --max-file-mb must be positive")
    if batch_window_ms < 0:
        raise PolyfuseError(f"--batch-window-ms must be 0 or more, got {batch_window_ms}")
    engine = load_engine(ckpt, onnx=onnx)
    pipeline = engine.pipeline
    fields = request_fields(pipeline)
    max_body, max_file = int(max_body_mb * MB), int(max_file_mb * MB)
    metrics = ServerMetrics(PATHS)
    no_files = tempfile.TemporaryDirectory(prefix="polyfuse-serve-root-")  # relative paths resolve into nothing
    engine.keep.append(no_files)

    def run_batch(examples: Sequence[Any]) -> list[dict[str, Any]]:
        preds = engine.predict_batch(pipeline.collate(list(examples)))
        metrics.rows_predicted.inc(len(examples))
        return [row_result(preds, i, engine.tasks, engine.classes) for i in range(len(examples))]

    batcher: MicroBatcher[Any, dict[str, Any]] = MicroBatcher(
        run_batch, batch_window_ms, max_batch, on_batch=metrics.batch_rows.observe
    )

    def explain_one(example: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """One row's predictions and explanation (one extra pass per input; not micro-batched)."""
        from polyfuse.explain import row_explanation

        batch = pipeline.collate([example])
        preds = engine.predict_batch(batch)
        contributions, weights = engine.explain(batch)
        metrics.rows_predicted.inc(1)
        return row_result(preds, 0, engine.tasks, engine.classes), row_explanation(contributions, 0, weights)

    def encode(values: Mapping[str, Any]) -> Any:
        record = {name: values.get(name) for name in fields}
        ctx = RowContext(root=Path(no_files.name), allow_outside_root=False, row=0, source="request")
        example = pipeline.encode_row(record, ctx)
        for problem in example.problems:
            if problem.stage == STAGE_INPUT and problem.category != EMPTY:
                column = (problem.column or problem.name or "input").split(",")[0].strip()
                raise RequestError(422, f"field {column!r}: {problem.reason}", column)
        return example

    app = FastAPI(title="polyfuse", version=__version__, description=f"Predictions of {engine.source}")
    app.state.engine = engine
    app.state.metrics = metrics
    app.state.fields = fields

    @app.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(_: Request, __: ClientDisconnect) -> Response:
        return Response(status_code=499)  # the client left before its body ended: not a server error (nginx's 499)

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        """One row in (multipart or JSON), predictions per task out."""
        from starlette.concurrency import run_in_threadpool

        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            values = await read_form(request, fields, max_file)
        elif content_type == "application/json":
            values = await read_json(request, fields, max_file)
        else:
            raise RequestError(
                415, f"Content-Type {content_type or '(none)'!r} is not accepted; send multipart/form-data "
                "(files), application/x-www-form-urlencoded (no files) or application/json"
            )
        explain = _flag(request.query_params.get("explain"), "explain")
        example = await run_in_threadpool(encode, values)
        missing = [name for name, arrays in example.inputs.items() if arrays is None]
        problems = [f"{p.column}: {p.reason}" for p in example.problems]
        if not explain:
            result = await batcher.submit(example)
            return JSONResponse({"predictions": result, "missing": missing, "problems": problems})
        result, explanation = await run_in_threadpool(explain_one, example)
        return JSONResponse({"predictions": result, "missing": missing, "problems": problems, "explanation": explanation})

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        """A page to try the model: a form of its inputs, the prediction and the per-input explanation."""
        from polyfuse.serve.page import render_page

        return HTMLResponse(render_page())

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "backend": engine.backend, "version": __version__}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        inputs = []
        for name, kind in engine.inputs.items():
            own = [f for f in fields.values() if f.input == name]
            inputs.append({"name": name, "kind": kind, "fields": [{"name": f.name, "role": f.role, "expects": f.describe()} for f in own]})
        return {
            "polyfuse_version": __version__,
            "backend": engine.backend,
            "source": engine.source,
            "inputs": inputs,
            "tasks": {t: {"type": kind, "classes": [_plain(c) for c in engine.classes.get(t, [])] or None} for t, kind in engine.tasks.items()},
            "metrics": {k: engine.metrics[k] for k in ("test", "valid") if k in engine.metrics},
            "limits": {"max_body_mb": max_body_mb, "max_file_mb": max_file_mb, "batch_window_ms": batch_window_ms, "max_batch": max_batch},
        }

    @app.get("/metrics")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
