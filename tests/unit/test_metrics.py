"""Metrics (cerebelum.telemetry): tallies, exposition, the ops endpoint, the API's requests."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cerebelum.config import ApiSettings, Settings
from cerebelum.telemetry.http import OpsServer, json_response, metrics_route, probe_route
from cerebelum.telemetry.metrics import (
    ApiMetrics,
    MirrorMetrics,
    Tally,
    WorkerMetrics,
    count_events,
    exposition,
)
from tests.unit.test_batch import decide, partition, start


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """name and sorted labels -> value, of every sample in an exposition."""
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_count_events_tallies_the_counted_types_by_workflow_and_step() -> None:
    tally: Tally = {}
    events = [
        {"type": "ExecutionStarted"},
        {"type": "StepScheduled", "step": "a"},  # not counted
        {"type": "StepFailed", "step": "a"},
        {"type": "StepRetryScheduled", "step": "a"},
        {"type": "StepFailed", "step": "a"},
    ]
    count_events(tally, events, "wf")
    assert tally == {
        ("ExecutionStarted", "wf", ""): 1,
        ("StepFailed", "wf", "a"): 2,
        ("StepRetryScheduled", "wf", "a"): 1,
    }


def test_a_batch_tallies_what_it_records_and_its_dead_letters_by_kind() -> None:
    ps, other = partition("e-1"), partition("e-2")
    batch = decide(
        start(ps, "e-1"),
        start(other, "e-2", workflow="no-such-workflow", offset=8),
        start(other, "e-3", offset=9, key=None),
    )
    assert batch.recorded == {("ExecutionStarted", "w3", ""): 1}
    assert batch.dead_letters == {"unknown_workflow": 1, "off_home": 1}


def test_worker_metrics_expose_counters_histograms_and_gauges() -> None:
    metrics = WorkerMetrics(
        owned_partitions=lambda: 3, consumer_lag=lambda: {5: 2, 1: 0}, steps_running=lambda: 4
    )
    metrics.committed(10, 0.004, {("ExecutionCompleted", "w3", ""): 10})
    metrics.committed(1, 0.02, {("ExecutionCompleted", "w3", ""): 1})
    metrics.dead_lettered({"invalid": 2})
    metrics.rebalanced("assigned")
    metrics.step_ran("w3", "step1", 0.003)
    got = samples(exposition(metrics.registry))
    assert got[("cerebelum_executions_completed_total", (("workflow", "w3"),))] == 11
    assert got[("cerebelum_transactions_total", ())] == 2
    assert got[("cerebelum_batch_inputs_sum", ())] == 11
    assert got[("cerebelum_transaction_duration_seconds_count", ())] == 2
    assert got[("cerebelum_dlq_records_total", (("reason", "invalid"),))] == 2
    assert got[("cerebelum_rebalances_total", (("kind", "assigned"),))] == 1
    step = (("step", "step1"), ("workflow", "w3"))
    assert got[("cerebelum_step_duration_seconds_count", step)] == 1
    assert got[("cerebelum_owned_partitions", ())] == 3
    assert got[("cerebelum_consumer_lag", (("partition", "5"),))] == 2
    assert got[("cerebelum_steps_running", ())] == 4
    assert ("process_cpu_seconds_total", ()) in got or ("process_cpu_seconds", ()) in got


def test_mirror_metrics_read_the_stats_when_scraped() -> None:
    stats = SimpleNamespace(
        events_seen=5, events_written=4, batches=1, malformed=0, rejected=1, db_retries=0
    )
    metrics = MirrorMetrics(lambda: stats)
    metrics.lag_events, metrics.lag_seconds = 7, 1.5
    stats.events_seen = 6  # read at scrape time, not copied
    got = samples(exposition(metrics.registry))
    assert got[("cerebelum_mirror_events_total", ())] == 6
    assert got[("cerebelum_mirror_rejected_total", ())] == 1
    assert got[("cerebelum_mirror_lag_events", ())] == 7
    assert got[("cerebelum_mirror_lag_seconds", ())] == 1.5


async def get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    async with httpx.AsyncClient() as http:
        response = await http.request(method, f"http://127.0.0.1:{port}{path}")
        return response.status_code, response.content


async def test_the_ops_server_serves_metrics_and_probes() -> None:
    metrics = WorkerMetrics()
    metrics.transactions = 9
    ready = False

    async def alive() -> tuple[bool, dict]:
        return True, {}

    async def readiness() -> tuple[bool, dict]:
        return ready, {"owned_partitions": 1}

    async def broken() -> tuple[int, str, bytes]:
        raise RuntimeError("boom")

    routes = {
        "/metrics": metrics_route(metrics.registry),
        "/healthz": probe_route(alive),
        "/readyz": probe_route(readiness),
        "/broken": broken,
    }
    server = OpsServer(routes, "127.0.0.1", 0)
    port = await server.start()
    try:
        status, body = await get(port, "/metrics")
        assert status == 200 and b"cerebelum_transactions_total 9.0" in body
        assert await get(port, "/healthz") == (200, b'{"status":"ok"}')
        status, body = await get(port, "/readyz?verbose=1")
        assert status == 503 and b'"owned_partitions":1' in body
        ready = True
        assert (await get(port, "/readyz"))[0] == 200
        assert (await get(port, "/nowhere"))[0] == 404
        assert (await get(port, "/healthz", "POST"))[0] == 405
        assert (await get(port, "/broken"))[0] == 500
        assert await get(port, "/healthz", "HEAD") == (200, b"")
        # A client that never sends a request does not hold the server up.
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await get(port, "/healthz"))[0] == 200
        writer.close()
    finally:
        await server.close()


def test_json_response() -> None:
    assert json_response(503, {"a": 1}) == (503, "application/json", b'{"a":1}')


async def test_the_api_counts_requests_by_route_template_and_status() -> None:
    from cerebelum.api import create_app

    # No lifespan here: only routes that need no services. Authentication off: the entrance
    # is tested in test_api_entrance.py and tests/integration/test_api_security.py.
    app = create_app(Settings(), ApiSettings(auth=False))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        assert (await http.get("/no/such/path")).status_code == 404
        assert (await http.get("/executions/bad id!")).status_code == 422
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.content)
    unmatched = (("method", "GET"), ("route", "unmatched"), ("status", "404"))
    assert got[("cerebelum_api_requests_total", unmatched)] == 1
    templated = (("method", "GET"), ("route", "/executions/{execution_id}"), ("status", "422"))
    assert got[("cerebelum_api_requests_total", templated)] == 1
    duration = (("method", "GET"), ("route", "/executions/{execution_id}"))
    assert got[("cerebelum_api_request_duration_seconds_count", duration)] == 1
    assert isinstance(app.state.metrics, ApiMetrics)


def test_the_grafana_dashboard_charts_only_metrics_that_exist() -> None:
    import json
    import re
    from pathlib import Path

    stats = SimpleNamespace(
        events_seen=0, events_written=0, batches=0, malformed=0, rejected=0, db_retries=0
    )
    exposed = set()
    for metrics in (WorkerMetrics(), MirrorMetrics(lambda: stats), ApiMetrics()):
        metrics_text = exposition(metrics.registry).decode()
        exposed |= {f.name for f in text_string_to_metric_families(metrics_text)}
    dashboard = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "cerebelum.json"
    panels = json.loads(dashboard.read_text())["panels"]
    charted = {
        re.sub(r"_(bucket|sum|count|total)$", "", name)
        for panel in panels
        for target in panel.get("targets", [])
        for name in re.findall(r"\b(?:cerebelum|process)_[a-z_]+", target["expr"])
    }
    assert charted and charted <= exposed, charted - exposed
