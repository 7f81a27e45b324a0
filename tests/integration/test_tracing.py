"""Tracing end to end: a real worker process with tracing on exports its spans over OTLP/HTTP to
a collector stub (a tiny HTTP server decoding the protobuf requests); the step spans of one
execution, and its execution span, share the trace its id derives, with their attributes."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from cerebelum.api import create_app
from cerebelum.client import Client
from cerebelum.config import Settings
from cerebelum.telemetry.tracing import execution_ids
from tests.conftest import Processes
from tests.helpers import API_HEADERS, api_settings, wait_for_workers

pytestmark = pytest.mark.integration


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Collector:
    """An OTLP/HTTP trace receiver: POST /v1/traces, protobuf in, spans kept as dicts."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests = 0
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server API)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest.FromString(body)
                collector.receive(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def receive(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            self.requests += 1
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        self.spans.append(
                            {
                                "name": s.name,
                                "trace_id": int.from_bytes(s.trace_id, "big"),
                                "span_id": int.from_bytes(s.span_id, "big"),
                                "parent": int.from_bytes(s.parent_span_id, "big") or None,
                                "start": s.start_time_unix_nano,
                                "end": s.end_time_unix_nano,
                                "status": s.status.code,
                                "attributes": {a.key: _value(a.value) for a in s.attributes},
                                "events": [e.name for e in s.events],
                                "resource": resource,
                            }
                        )

    def of(self, execution_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                s
                for s in self.spans
                if s["attributes"].get("cerebelum.execution_id") == execution_id
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


async def spans_of(collector: Collector, execution_id: str, count: int) -> list[dict[str, Any]]:
    """The spans of an execution, once `count` have arrived (the batch processor sends them
    every OTEL_BSP_SCHEDULE_DELAY ms)."""
    deadline = time.monotonic() + 15
    while len(found := collector.of(execution_id)) < count:
        assert time.monotonic() < deadline, f"{len(found)} spans of {execution_id}: {found}"
        await asyncio.sleep(0.1)
    return found


async def test_a_traced_worker_exports_one_trace_per_execution_over_otlp(
    settings: Settings,
    database: None,
    processes: Processes,
    client: Client,
    collector: Collector,
    tmp_path: Path,
) -> None:
    worker = processes.worker(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
        OTEL_BSP_SCHEDULE_DELAY="100",  # ms: spans leave at once, not after the 5 s default
    )
    member = settings.names.worker_client_id(f"{socket.gethostname()}:{worker.pid}")
    await wait_for_workers(settings, {member}, timeout=60)

    done = f"trace-w3-{uuid.uuid4().hex}"
    failing = f"trace-fail-{uuid.uuid4().hex}"
    result = await client.run("w3", {"n": 1}, done, timeout=60)
    assert result.status == "completed"
    failed = await client.run("retrier", {"succeed_on": 3}, failing, timeout=60)
    assert failed.status == "completed"  # after two failed attempts

    # w3: three step spans under the execution's span, all in the trace its id derives.
    trace_id, root_id = execution_ids(done)
    spans = await spans_of(collector, done, 4)
    assert len(spans) == 4, spans
    assert {s["trace_id"] for s in spans} == {trace_id}
    root = next(s for s in spans if s["name"] == "execution w3")
    steps = sorted((s for s in spans if s is not root), key=lambda s: s["start"])
    assert [s["name"] for s in steps] == ["step w3.step1", "step w3.step2", "step w3.step3"]
    assert root["span_id"] == root_id and root["parent"] is None
    assert root["status"] == Status.STATUS_CODE_OK
    assert root["attributes"]["cerebelum.outcome"] == "completed"
    assert root["start"] <= steps[0]["start"] and steps[-1]["end"] <= root["end"]
    for s, name in zip(steps, ["step1", "step2", "step3"], strict=True):
        assert s["parent"] == root_id
        attributes = s["attributes"]
        assert attributes["cerebelum.workflow"] == "w3"
        assert attributes["cerebelum.step"] == name
        assert attributes["cerebelum.attempt"] == 1
        assert attributes["cerebelum.outcome"] == "ok"
        assert attributes["cerebelum.partition"] == root["attributes"]["cerebelum.partition"]
    assert root["resource"]["service.name"] == "cerebelum-worker"
    assert root["resource"]["service.instance.id"] == f"{socket.gethostname()}:{worker.pid}"

    # retrier: two failed attempts (an error status and the exception) then one that worked.
    spans = await spans_of(collector, failing, 4)
    runs = sorted((s for s in spans if s["name"] == "step retrier.flaky"), key=lambda s: s["start"])
    assert [s["attributes"]["cerebelum.attempt"] for s in runs] == [1, 2, 3]
    assert [s["attributes"]["cerebelum.outcome"] for s in runs] == ["error", "error", "ok"]
    assert [s["status"] for s in runs[:2]] == [Status.STATUS_CODE_ERROR] * 2
    assert all(s["events"] == ["exception"] for s in runs[:2])
    assert {s["trace_id"] for s in spans} == {execution_ids(failing)[0]}

    # A start through the API with a W3C traceparent header: the execution joins that trace,
    # its span a child of the caller's.
    caller_trace, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    app = create_app(settings, api_settings(tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            headers = {**API_HEADERS, "traceparent": f"00-{caller_trace}-{caller_span}-01"}
            response = await http.post(
                "/executions", json={"workflow": "w3", "inputs": {"n": 2}}, headers=headers
            )
    assert response.status_code == 202, response.text
    joined = response.json()["execution_id"]
    spans = await spans_of(collector, joined, 4)
    assert {s["trace_id"] for s in spans} == {int(caller_trace, 16)}
    root = next(s for s in spans if s["name"] == "execution w3")
    assert root["parent"] == int(caller_span, 16)
    assert root["span_id"] == execution_ids(joined)[1]
    assert sorted(s["parent"] for s in spans if s is not root) == [root["span_id"]] * 3
