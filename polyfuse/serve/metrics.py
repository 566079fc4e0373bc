"""Prometheus metrics of the server: requests by path/method/status, latency, batch sizes.

Each app owns its registry (several apps in one process, as in tests, do not mix counts).
``MetricsMiddleware`` is plain ASGI and sits outermost, so refused requests (413 before the
body is read) are counted too.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ServerMetrics:
    """The counters and histograms of one app, in their own registry."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = set(paths)
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "polyfuse_http_requests", "HTTP requests by path, method and status code.",
            ["path", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "polyfuse_http_request_duration_seconds", "Time from request start to the end of the response.",
            ["path"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_rows = Histogram(
            "polyfuse_batch_rows", "Rows per model forward pass (micro-batching groups concurrent requests).",
            buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.rows_predicted = Counter("polyfuse_rows_predicted", "Rows predicted.", registry=self.registry)

    def label(self, path: str) -> str:
        """Known routes keep their path; anything else is ``other`` (bounded label values)."""
        return path if path in self.paths else "other"

    def observe(self, path: str, method: str, status: int, seconds: float) -> None:
        label = self.label(path)
        self.requests.labels(label, method, str(status)).inc()
        self.latency.labels(label).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Times every HTTP request and counts it with the status code the app answered."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(scope.get("path", ""), scope.get("method", ""), status, time.perf_counter() - started)
