"""The API's metrics: every request counted by route, method and status, and timed; served at
GET /metrics (names: cerebelum.telemetry.metrics)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cerebelum.telemetry.metrics import CONTENT_TYPE_LATEST, ApiMetrics, exposition

# The route label of a request no route matched (a 404 on an unknown path): one label for all,
# so a scan of random paths cannot grow the metric without bound.
UNMATCHED = "unmatched"


class MeasureRequests:
    """ASGI middleware: after each HTTP request, its route's template (bounded labels, not the
    path), method, status and duration go to `metrics`."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped the app

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route: Any = scope.get("route")  # set by the router once a route matched
            template = getattr(route, "path", None) or UNMATCHED
            self.metrics.answered(scope["method"], template, status, time.perf_counter() - started)


def add_metrics(app: FastAPI) -> ApiMetrics:
    """Measure every request of `app` and serve GET /metrics."""
    metrics = ApiMetrics()
    app.add_middleware(MeasureRequests, metrics=metrics)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"description": "Prometheus text format.", "content": {"text/plain": {}}}},
        # cerebelum.api.guard: a scraper needs a token with the read scope (not imported
        # from there to keep this module free of the entrance).
        openapi_extra={"x-required-scope": "read"},
    )
    async def serve_metrics() -> Response:
        """Prometheus metrics (text format)."""
        return Response(exposition(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
