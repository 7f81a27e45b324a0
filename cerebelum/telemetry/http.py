"""A tiny HTTP/1.0 server on the process's own event loop: /metrics, /healthz, /readyz.

For the worker and the mirror, which have no web framework (the API serves the same paths
through FastAPI). It runs on the event loop it reports on, so:

- an answer at all proves the loop responsive (/healthz: a blocked loop answers nothing, and
  the prober's timeout says so);
- the metrics' collectors read the process's state on the loop's own thread, never racing it.

Only GET and HEAD, one request per connection, no keep-alive: a scraper and a prober are all
it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from cerebelum.telemetry.metrics import CONTENT_TYPE_LATEST, exposition

log = logging.getLogger(__name__)

# (status, content type, body)
Response = tuple[int, str, bytes]
Route = Callable[[], Awaitable[Response]]
# A probe: (ok, details shown in the JSON body).
Probe = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]

# A client that has not sent its request line and headers within this long is dropped: a
# scraper sends them at once, and a stuck connection must not hold a task forever.
REQUEST_TIMEOUT_S = 5.0
# Requests are a line and a few headers; anything larger is not a scraper.
MAX_HEADER_BYTES = 16 * 1024

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip


def json_response(status: int, body: dict[str, Any]) -> Response:
    return status, "application/json", orjson.dumps(body)


def probe_route(probe: Probe) -> Route:
    """A route answering 200 {"status": "ok", ...details} or 503 {"status": "unavailable", ...}."""

    async def route() -> Response:
        ok, details = await probe()
        status = "ok" if ok else "unavailable"
        return json_response(200 if ok else 503, {"status": status, **details})

    return route


def metrics_route(registry: CollectorRegistry) -> Route:
    async def route() -> Response:
        return 200, CONTENT_TYPE_LATEST, exposition(registry)

    return route


async def start_ops_server(
    what: str, host: str, port: int, registry: CollectorRegistry, alive: Probe, ready: Probe
) -> OpsServer:
    """Serve /metrics, /healthz (`alive`) and /readyz (`ready`) for `what` ("worker",
    "mirror"); the address is logged (port 0: the one the system picked)."""
    routes = {
        "/metrics": metrics_route(registry),
        "/healthz": probe_route(alive),
        "/readyz": probe_route(ready),
    }
    server = OpsServer(routes, host, port)
    bound = await server.start()
    log.info("%s: /metrics, /healthz and /readyz on http://%s:%d", what, host, bound)
    return server


class OpsServer:
    """Serves `routes` (path -> route) on host:port; port 0 picks a free one (`port` after
    start())."""

    def __init__(self, routes: dict[str, Route], host: str, port: int) -> None:
        self.routes = routes
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_HEADER_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            method, path = _request_line(head)
            status, content_type, body = await self._answer(method, path)
            writer.write(
                f"HTTP/1.0 {status} {_REASONS.get(status, '')}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + (b"" if method == "HEAD" else body)
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, method: str, path: str) -> Response:
        route = self.routes.get(path)
        if route is None:
            return json_response(404, {"error": f"no such path; try {', '.join(self.routes)}"})
        if method not in ("GET", "HEAD"):
            return json_response(405, {"error": "only GET and HEAD"})
        try:
            return await route()
        except Exception as exc:
            log.exception("serving %s failed", path)
            return json_response(500, {"error": f"{type(exc).__name__}: {exc}"})


def _request_line(head: bytes) -> tuple[str, str]:
    """(method, path without its query) of a request's head; ("", "") if unreadable."""
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(parts) < 2:
        return "", ""
    return parts[0].upper(), parts[1].split("?", 1)[0]
