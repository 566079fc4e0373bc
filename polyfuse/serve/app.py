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

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.requests import ClientDisconnect

from polyfuse._version import __version__
from polyfuse.serve.batching import MicroBatcher
from polyfuse.serve.requests import (
    MB, BodyLimitMiddleware, RequestError, error_response, query_flag, read_form, read_json, request_fields,
)
from polyfuse.serve.metrics import MetricsMiddleware, ServerMetrics

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


# --------------------------------------------------------------------------- predictions


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def row_result(preds: Mapping[str, np.ndarray], i: int, tasks: Mapping[str, str], classes: Mapping[str, list[Any]]) -> dict[str, Any]:
    """One row's predictions per task, as its task type writes them (label / labels + probabilities, value)."""
    from polyfuse.tasks import TASKS

    return {task: TASKS[kind].json_result(np.asarray(preds[task][i], dtype=np.float64), classes.get(task, [])) for task, kind in tasks.items()}


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
        return error_response(exc)

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
        explain = query_flag(request.query_params.get("explain"), "explain")
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
