"""The HTTP API in-process (httpx + ASGI), against the real broker and database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cerebelum.api import create_app
from cerebelum.client import partition_for
from cerebelum.config import Settings
from cerebelum.constants import PARTITIONS, TOPIC_COMMANDS
from cerebelum.core import events as ev
from cerebelum.core.commands import MAX_COMMAND_BYTES, parse_command
from cerebelum.core.events import make_event
from cerebelum.db import connect_pool
from cerebelum.mirror.fold import decode_event, sort_and_dedupe
from cerebelum.mirror.store import write_batch

pytestmark = pytest.mark.integration

AT = 1_700_000_000_000


@pytest.fixture(scope="module")
async def api(settings: Settings, topics: None, database: None) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            yield http


@pytest.fixture(scope="module")
async def pool(settings: Settings, database: None) -> AsyncIterator[asyncpg.Pool]:
    p = await connect_pool(settings.database_url, min_size=1, max_size=2)
    yield p
    await p.close()


def new_id(prefix: str = "api") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


async def read_command(settings: Settings, execution_id: str, start: int) -> dict[str, Any]:
    """The start-command keyed `execution_id`, read back from its partition from `start`."""
    tp = TopicPartition(TOPIC_COMMANDS, partition_for(execution_id))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        async with asyncio.timeout(5):
            while True:
                for record in (await consumer.getmany(tp, timeout_ms=200)).get(tp, []):
                    if record.key == execution_id.encode():
                        return {"partition": record.partition, "value": record.value}
    finally:
        await consumer.stop()


async def end_offsets(settings: Settings, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


# --- POST /executions -----------------------------------------------------------------------------


async def test_start_produces_the_command_and_answers_202(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    eid = new_id()
    tp = TopicPartition(TOPIC_COMMANDS, partition_for(eid))
    start = (await end_offsets(settings, [tp]))[tp]
    response = await api.post(
        "/executions", json={"workflow": "order", "inputs": {"order_id": 7}, "execution_id": eid}
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"execution_id": eid, "partition": partition_for(eid)}

    record = await read_command(settings, eid, start)
    assert record["partition"] == partition_for(eid)
    command = parse_command(record["value"])
    assert (command.execution_id, command.workflow, command.inputs) == (
        eid,
        "order",
        {"order_id": 7},
    )


async def test_start_without_an_id_makes_one(api: httpx.AsyncClient, settings: Settings) -> None:
    starts = await end_offsets(
        settings, [TopicPartition(TOPIC_COMMANDS, p) for p in range(PARTITIONS)]
    )
    response = await api.post("/executions", json={"workflow": "order"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert len(body["execution_id"]) == 32
    assert body["partition"] == partition_for(body["execution_id"])
    start = starts[TopicPartition(TOPIC_COMMANDS, body["partition"])]
    record = await read_command(settings, body["execution_id"], start)
    assert parse_command(record["value"]).inputs == {}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"", 422),
        (b"[]", 422),
        (b"null", 422),
        (b"{}", 422),
        (b'{"workflow": 7}', 422),
        (b'{"workflow": ""}', 422),
        (b'{"workflow": ["order"]}', 422),
        (b'{"workflow": "order", "inputs": [1, 2]}', 422),
        (b'{"workflow": "order", "inputs": "x"}', 422),
        (b'{"workflow": "order", "execution_id": 12}', 422),
        (b'{"workflow": "order", "execution_id": ""}', 422),
        (b'{"workflow": "order", "execution_id": "' + b"x" * 201 + b'"}', 422),
        (b'{"workflow": "order", "input": {}}', 422),
    ],
)
async def test_malformed_start_requests_get_a_json_4xx(
    api: httpx.AsyncClient, body: bytes, status: int
) -> None:
    response = await api.post(
        "/executions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["error"], str)


async def test_a_start_over_the_size_limit_is_refused(api: httpx.AsyncClient) -> None:
    big = {"blob": "x" * MAX_COMMAND_BYTES}
    response = await api.post("/executions", json={"workflow": "order", "inputs": big})
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


# --- queries --------------------------------------------------------------------------------------


async def test_an_execution_and_its_events(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    eid = new_id()
    workflow = f"wf-{uuid.uuid4().hex[:8]}"
    history = [
        make_event(eid, 1, ev.EXECUTION_STARTED, AT, workflow=workflow, workflow_version="v1",
                   inputs={"n": 1}),
        make_event(eid, 2, ev.STEP_SCHEDULED, AT + 1, step="a", index=0, attempt=1),
        make_event(eid, 3, ev.STEP_COMPLETED, AT + 2, step="a", attempt=1, result=2),
        make_event(eid, 4, ev.EXECUTION_COMPLETED, AT + 3, output={"ok": True}),
    ]  # fmt: skip
    rows = sort_and_dedupe(decode_event(orjson.dumps(e), 9, i) for i, e in enumerate(history))
    async with pool.acquire() as conn:
        await write_batch(conn, rows)

    response = await api.get(f"/executions/{eid}")
    assert response.status_code == 200
    row = response.json()
    assert row["execution_id"] == eid and row["workflow"] == workflow
    assert (row["status"], row["last_version"], row["current_step"]) == ("completed", 4, "a")
    assert row["inputs"] == {"n": 1} and row["output"] == {"ok": True} and row["error"] is None
    assert row["started_at"] == "2023-11-14T22:13:20Z"
    assert row["finished_at"] == "2023-11-14T22:13:20.003000Z"

    response = await api.get(f"/executions/{eid}/events")
    assert response.status_code == 200
    events = response.json()["events"]
    assert [e["version"] for e in events] == [1, 2, 3, 4]
    assert [e["data"] for e in events] == history
    assert events[0]["kafka_partition"] == 9

    response = await api.get(f"/executions/{eid}/events", params={"after_version": 2, "limit": 1})
    assert [e["version"] for e in response.json()["events"]] == [3]
    response = await api.get(f"/executions/{eid}/events", params={"after_version": 4})
    assert response.status_code == 200 and response.json()["events"] == []

    for params in ({"workflow": workflow}, {"workflow": workflow, "status": "completed"}):
        listed = (await api.get("/executions", params=params)).json()["executions"]
        assert [e["execution_id"] for e in listed] == [eid]
        assert "inputs" not in listed[0]
    listed = await api.get("/executions", params={"workflow": workflow, "status": "failed"})
    assert listed.json() == {"executions": []}
    listed = (await api.get("/executions", params={"status": "completed", "limit": 1})).json()
    assert len(listed["executions"]) == 1


async def test_unknown_executions_are_404(api: httpx.AsyncClient) -> None:
    eid = new_id("nobody")
    for path in (f"/executions/{eid}", f"/executions/{eid}/events"):
        response = await api.get(path)
        assert response.status_code == 404
        assert response.json() == {"error": "execution not found", "execution_id": eid}


@pytest.mark.parametrize(
    "path",
    [
        "/executions?limit=0",
        "/executions?limit=abc",
        "/executions?limit=100000",
        "/executions/x/events?after_version=-1",
        "/executions/" + "x" * 201,
    ],
)
async def test_bad_query_parameters_are_422(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(path)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid request"


async def test_unknown_routes_and_methods_answer_json(api: httpx.AsyncClient) -> None:
    response = await api.get("/nowhere")
    assert response.status_code == 404 and response.json() == {"error": "Not Found"}
    response = await api.delete("/executions")
    assert response.status_code == 405 and "error" in response.json()


async def test_healthz(api: httpx.AsyncClient) -> None:
    response = await api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "kafka": True, "database": True}


async def test_signal_and_cancel_produce_commands(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    """POST signal and cancel answer 202 and the commands reach cerebelum.commands."""
    eid = new_id("api-signal")
    tp = TopicPartition(TOPIC_COMMANDS, partition_for(eid))
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        consumer.assign([tp])
        start = (await consumer.end_offsets([tp]))[tp]
        r = await api.post(f"/executions/{eid}/signals/approval", content=b'{"approved": true}')
        assert r.status_code == 202 and r.json()["signal"] == "approval"
        r = await api.post(f"/executions/{eid}/cancel", json={"reason": "no longer needed"})
        assert r.status_code == 202
        r = await api.post(f"/executions/{eid}/signals/approval", content=b"{bad")
        assert r.status_code == 400 and "error" in r.json()
        consumer.seek(tp, start)
        seen = []
        while len(seen) < 2:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                seen += [orjson.loads(m.value) for m in records if m.key == eid.encode()]
        assert [c["type"] for c in seen] == ["SendSignal", "CancelExecution"]
        assert seen[0]["payload"] == {"approved": True} and seen[1]["reason"] == "no longer needed"
    finally:
        await consumer.stop()
