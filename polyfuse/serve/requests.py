"""What a request may hold: the fields of a model's inputs, checks of their values (files never read by
path), multipart and JSON bodies, the body-size limit, query flags, and errors that name the field."""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from fastapi import Request
from fastapi.responses import JSONResponse

from polyfuse.data.shards import FILE_KINDS

MB = 1024 * 1024


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
                response = error_response(BodyTooLarge(self.max_bytes))
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


def error_response(exc: RequestError) -> JSONResponse:
    body: dict[str, Any] = {"detail": exc.message}
    if exc.field is not None:
        body["field"] = exc.field
    return JSONResponse(body, status_code=exc.status)



def query_flag(value: str | None, name: str) -> bool:
    """A query flag: absent/false/0/no -> False, true/1/yes -> True; anything else is a 422 naming it."""
    if value is None:
        return False
    text = value.strip().lower()
    if text in ("", "0", "false", "no"):
        return False
    if text in ("1", "true", "yes"):
        return True
    raise RequestError(422, f"query parameter {name!r}: expected true or false, got {value[:40]!r}", name)
