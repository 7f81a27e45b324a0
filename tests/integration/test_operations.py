"""Operating a cluster: the worker's and the mirror's /metrics, /healthz and /readyz, JSON logs,
and a failed step's traceback in its history, on the real Kafka broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cerebelum.api import create_app
from cerebelum.client import Client
from cerebelum.config import Settings
from tests.conftest import LOGS, Processes
from tests.helpers import (
    API_HEADERS,
    api_settings,
    end_offsets,
    events_since,
    free_port,
    wait_for_workers,
)

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as http:
        return await http.get(f"http://127.0.0.1:{port}{path}")


async def until(check: Callable[[], object], timeout: float, what: str) -> None:
    """Poll the async `check` until it returns something true."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                if await check():  # type: ignore[misc]
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await asyncio.sleep(0.3)
    raise AssertionError(what)


async def scrape(port: int) -> Samples:
    response = await get(port, "/metrics")
    assert response.status_code == 200
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def log_lines(processes: Processes, index: int, command: str) -> list[str]:
    path: Path = LOGS / f"{processes.name}-{index}-{command}.log"
    return path.read_text().splitlines()


async def test_worker_and_mirror_report_health_metrics_json_logs_and_tracebacks(
    settings: Settings, database: None, processes: Processes, client: Client, tmp_path: Path
) -> None:
    worker_port, mirror_port = free_port(), free_port()
    worker = processes.worker(
        CEREBELUM_WORKER_HTTP_PORT=str(worker_port), CEREBELUM_LOG_FORMAT="json"
    )
    processes.spawn("mirror", CEREBELUM_MIRROR_HTTP_PORT=str(mirror_port))

    # /healthz answers as soon as the process serves; /readyz once it owns its partitions
    # (a member an earlier test left behind may hold some until its session expires).
    await until(
        lambda: _status(worker_port, "/healthz", 200), 30, "the worker's /healthz never answered"
    )
    member = settings.names.worker_client_id(f"{socket.gethostname()}:{worker.pid}")
    await wait_for_workers(settings, {member}, timeout=60)
    await until(lambda: _status(worker_port, "/readyz", 200), 60, "the worker never became ready")
    ready = (await get(worker_port, "/readyz")).json()
    assert ready["status"] == "ok" and ready["joined"] and ready["restoring_partitions"] == 0

    # A few executions, and one whose step fails for good after its retries.
    ids = [f"ops-w3-{uuid.uuid4().hex}" for _ in range(5)]
    results = await asyncio.gather(*(client.run("w3", {"n": i}, eid) for i, eid in enumerate(ids)))
    assert all(r.status == "completed" for r in results)
    since = await end_offsets(settings)
    failing = f"ops-fail-{uuid.uuid4().hex}"
    failed = await client.run("retrier", {"succeed_on": 99}, failing, timeout=60)
    assert failed.status == "failed" and failed.error["type"] == "Flaky"

    # The worker's metrics: the executions, the transactions that recorded them, ownership.
    async def counted() -> bool:
        got = await scrape(worker_port)
        return got.get(("cerebelum_executions_completed_total", (("workflow", "w3"),)), 0) >= 5

    await until(counted, 10, "the worker's metrics never counted the executions")
    got = await scrape(worker_port)
    assert got[("cerebelum_transactions_total", ())] > 0
    assert got[("cerebelum_batch_inputs_count", ())] > 0
    assert got[("cerebelum_owned_partitions", ())] == 64
    assert got[("cerebelum_executions_failed_total", (("workflow", "retrier"),))] >= 1
    flaky = (("step", "flaky"), ("workflow", "retrier"))
    assert got[("cerebelum_step_retries_total", flaky)] >= 3  # 4 attempts
    assert got[("cerebelum_step_failures_total", flaky)] >= 4
    assert got[("cerebelum_step_duration_seconds_count", (("step", "step1"), ("workflow", "w3")))]

    async def lag_known() -> bool:  # end offsets are copied every 5 s (ENDS_REFRESH_S)
        got = await scrape(worker_port)
        lags = [v for (name, _), v in got.items() if name == "cerebelum_consumer_lag"]
        return len(lags) > 0 and all(v >= 0 for v in lags)

    await until(lag_known, 15, "the worker's consumer lag never showed")

    # Each StepFailed event carries its traceback: the step's own frame and its error.
    events = (await events_since(settings, since, {failing}))[failing]
    step_failures = [e for e in events if e["type"] == "StepFailed"]
    assert len(step_failures) == 4
    for e in step_failures:
        assert e["traceback"].startswith("Traceback (most recent call last):")
        assert 'raise Flaky(f"attempt {ctx.attempt}")' in e["traceback"]
        assert f"Flaky: attempt {e['attempt']}" in e["traceback"]

    # ... and so does the history in PostgreSQL and over HTTP, once the mirror has it.
    await until(lambda: _mirrored(settings, failing), 60, "the mirror never wrote the failure")
    app = create_app(settings, api_settings(tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        http_client = httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=API_HEADERS
        )
        async with http_client as http:
            history = (await http.get(f"/executions/{failing}/events")).json()["events"]
    recorded = [e["data"] for e in history if e["type"] == "StepFailed"]
    assert len(recorded) == 4 and all("Flaky: attempt" in e["traceback"] for e in recorded)

    # The mirror: ready, and its lag is there (and nothing is left behind once caught up).
    assert (await get(mirror_port, "/readyz")).status_code == 200
    assert (await get(mirror_port, "/healthz")).status_code == 200

    async def caught_up() -> bool:
        got = await scrape(mirror_port)
        return got[("cerebelum_mirror_events_total", ())] > 0 and (
            got[("cerebelum_mirror_lag_events", ())] == 0
        )

    await until(caught_up, 30, "the mirror's metrics never showed it caught up")
    got = await scrape(mirror_port)
    assert got[("cerebelum_mirror_lag_seconds", ())] == 0
    assert got[("cerebelum_mirror_write_duration_seconds_count", ())] > 0

    # The worker's log is JSON, one object per line; the failed step's line names it.
    lines = log_lines(processes, 0, "worker")
    entries = [orjson.loads(line) for line in lines]  # every line parses
    assert {"timestamp", "level", "logger", "message"} <= set(entries[0])
    failures = [e for e in entries if e.get("execution_id") == failing and "exception" in e]
    assert failures, "no log line of the failed step"
    first = failures[0]
    assert first["workflow"] == "retrier" and first["step"] == "flaky"
    assert isinstance(first["partition"], int)
    assert first["level"] == "WARNING" and "Flaky: attempt" in first["exception"]


async def _status(port: int, path: str, status: int) -> bool:
    return (await get(port, path)).status_code == status


async def _mirrored(settings: Settings, execution_id: str) -> bool:
    conn = await asyncpg.connect(settings.namespace_database_url)
    try:
        status = await conn.fetchval(
            "SELECT status FROM executions WHERE execution_id = $1", execution_id
        )
        return bool(status == "failed")
    finally:
        await conn.close()
