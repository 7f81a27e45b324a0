"""The HTTP API in-process (httpx + ASGI), against the real broker and database."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cerebelum.admin.workflows import publish_workflows, withdraw_workflows
from cerebelum.api import create_app
from cerebelum.client import partition_for
from cerebelum.config import Settings
from cerebelum.constants import PARTITIONS
from cerebelum.core import events as ev
from cerebelum.core.commands import MAX_COMMAND_BYTES, parse_command
from cerebelum.core.events import make_event
from cerebelum.core.ids import id_problem
from cerebelum.core.workflow import Registry
from cerebelum.db import connect_pool
from cerebelum.mirror.fold import decode_event, sort_and_dedupe
from cerebelum.mirror.store import write_batch
from examples.order import order
from tests.apps import w3
from tests.conftest import Processes
from tests.helpers import (
    API_HEADERS,
    JSON,
    api_settings,
    wait_for_workers,
    worker_member,
)
from tests.integration.test_cli import acli

pytestmark = pytest.mark.integration

AT = 1_700_000_000_000


@pytest.fixture(scope="module")
async def pool(settings: Settings, database: None) -> AsyncIterator[asyncpg.Pool]:
    p = await connect_pool(settings.namespace_database_url, min_size=1, max_size=2)
    yield p
    await p.close()


def new_id(prefix: str = "api") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


async def read_command(settings: Settings, execution_id: str, start: int) -> dict[str, Any]:
    """The start-command keyed `execution_id`, read back from its partition from `start`."""
    tp = TopicPartition(settings.names.commands, partition_for(execution_id))
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
    tp = TopicPartition(settings.names.commands, partition_for(eid))
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
        settings, [TopicPartition(settings.names.commands, p) for p in range(PARTITIONS)]
    )
    response = await api.post("/executions", json={"workflow": "order"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert len(body["execution_id"]) == 32
    assert body["partition"] == partition_for(body["execution_id"])
    start = starts[TopicPartition(settings.names.commands, body["partition"])]
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
        (b'{"workflow": "order", "execution_id": "schedule.nightly"}', 422),
        (b'{"workflow": "order", "execution_id": "rate.call.k"}', 422),
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


async def test_an_execution_and_its_events(
    settings: Settings, api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
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
        await write_batch(conn, rows, settings.names.mirrored_channel)

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
    assert listed.json() == {"executions": [], "next_cursor": None}
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


async def test_healthz(settings: Settings, api: httpx.AsyncClient) -> None:
    response = await api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "kafka": True,
        "database": True,
        "namespace": settings.namespace,  # the API serves its settings' namespace and says so
    }
    assert settings.namespace in (await api.get("/openapi.json")).json()["info"]["description"]


async def test_signal_and_cancel_produce_commands(
    api: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool
) -> None:
    """POST signal and cancel of a running execution answer 202 and the commands reach
    cerebelum.commands."""
    eid = new_id("api-signal")
    await write_history(settings, pool, [
        make_event(eid, 1, ev.EXECUTION_STARTED, AT, workflow="approver", workflow_version="v",
                   inputs={}),
    ])  # fmt: skip
    tp = TopicPartition(settings.names.commands, partition_for(eid))
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        consumer.assign([tp])
        start = (await consumer.end_offsets([tp]))[tp]
        r = await api.post(
            f"/executions/{eid}/signals/approval", content=b'{"approved": true}', headers=JSON
        )
        assert r.status_code == 202 and r.json()["signal"] == "approval"
        r = await api.post(f"/executions/{eid}/cancel", json={"reason": "no longer needed"})
        assert r.status_code == 202
        r = await api.post(f"/executions/{eid}/signals/approval", content=b"{bad", headers=JSON)
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


# --- issue 8, item 2: the id alphabet at the HTTP entrance ----------------------------------------

BAD_IDS = ["nul\x00in-it", "line\nbreak", "-leading-dash", "sp ace", "ü", "%2F", "x" * 201]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_ids_and_names_outside_the_alphabet_are_422_with_the_reason(
    api: httpx.AsyncClient, settings: Settings, bad: str
) -> None:
    before = await end_offsets(
        settings, [TopicPartition(settings.names.commands, p) for p in range(PARTITIONS)]
    )
    segment = quote(bad, safe="")
    attempts = [
        ("execution_id", api.post("/executions", json={"workflow": "w3", "execution_id": bad})),
        ("workflow", api.post("/executions", json={"workflow": bad})),
        (
            "execution_id",
            api.post(f"/executions/{segment}/signals/approval", content=b"1", headers=JSON),
        ),
        ("signal", api.post(f"/executions/fine-id/signals/{segment}", content=b"1", headers=JSON)),
        ("execution_id", api.post(f"/executions/{segment}/cancel", json={})),
        ("execution_id", api.get(f"/executions/{segment}")),
        ("execution_id", api.get(f"/executions/{segment}/events")),
    ]
    for what, attempt in attempts:
        response = await attempt
        assert response.status_code == 422, (what, response.text)
        assert response.json()["error"] == id_problem(bad, what), response.text
    after = await end_offsets(
        settings, [TopicPartition(settings.names.commands, p) for p in range(PARTITIONS)]
    )
    assert after == before


# --- issue 8, item 8: mistakes the API can know about are refused at once ------------------------


async def write_history(
    settings: Settings, pool: asyncpg.Pool, events: list[dict[str, Any]]
) -> None:
    eid = events[0]["execution_id"]
    rows = sort_and_dedupe(decode_event(orjson.dumps(e), partition_for(eid), i)
                           for i, e in enumerate(events))  # fmt: skip
    async with pool.acquire() as conn:
        await write_batch(conn, rows, settings.names.mirrored_channel)


async def test_a_start_naming_a_workflow_no_live_worker_runs_is_409(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    worker_id = new_id("api-worker")
    await publish_workflows(settings, worker_id, Registry([w3, order]))
    try:
        async with worker_member(settings, worker_id):
            await wait_for_workers(settings, {settings.names.worker_client_id(worker_id)})
            eid = new_id()
            response = await api.post("/executions", json={"workflow": "w4", "execution_id": eid})
            assert response.status_code == 409, response.text
            assert response.json() == {
                "error": "no live worker runs workflow 'w4'",
                "workflow": "w4",
                "workflows": ["order", "w3"],
            }
            response = await api.post("/executions", json={"workflow": "w3", "execution_id": eid})
            assert response.status_code == 202, response.text

            # What the live workers run, with each version's graph.
            listed = (await api.get("/workflows")).json()
            assert listed["complete"] is True and worker_id in listed["live_workers"]
            by_name = {w["name"]: w for w in listed["workflows"]}
            # (Versions no live worker runs follow, if they have live executions: blocked.)
            [version, *others] = by_name["order"]["versions"]
            assert all(v["workers"] == [] and v["live_executions"] for v in others), others
            assert version["version"] == order.version and version["newest"] is True
            assert version["workers"] == [worker_id]
            assert version["graph"] == orjson.loads(orjson.dumps(order.graph()))
            kinds = [n["kind"] for n in version["graph"]["nodes"]]
            assert kinds == ["step", "parallel", "step", "approval", "step"]
            assert {r["kind"] for r in version["graph"]["rules"]} == {"branch", "diverge"}
            shown = await acli(settings, "workflows", "--json")
            assert shown.returncode == 0, shown.stderr
            lines = {orjson.loads(line)["name"]: orjson.loads(line) for line in
                     shown.stdout.splitlines()}  # fmt: skip
            assert lines["order"]["versions"][0]["workers"] == [worker_id]
            graph = await acli(settings, "workflows", "--graph", "order")
            assert orjson.loads(graph.stdout) == version["graph"]
    finally:
        await withdraw_workflows(settings, worker_id)


async def test_a_start_with_no_live_worker_is_accepted(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    """With no worker at all, the command waits on its partition for the first one."""
    await wait_for_workers(settings, set())
    response = await api.post("/executions", json={"workflow": "anything-at-all"})
    assert response.status_code == 202, response.text


async def test_signal_or_cancel_of_an_ended_execution_is_409(
    api: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool
) -> None:
    eid = new_id("api-ended")
    await write_history(settings, pool, [
        make_event(eid, 1, ev.EXECUTION_STARTED, AT, workflow="w3", workflow_version="v",
                   inputs={}),
        make_event(eid, 2, ev.EXECUTION_CANCELLED, AT + 1, reason="by hand"),
    ])  # fmt: skip
    tp = TopicPartition(settings.names.commands, partition_for(eid))
    before = await end_offsets(settings, [tp])
    for path in (f"/executions/{eid}/signals/approval", f"/executions/{eid}/cancel"):
        response = await api.post(path, json={})
        assert response.status_code == 409, response.text
        assert response.json() == {
            "error": f"execution {eid} has ended (cancelled)",
            "execution_id": eid,
            "status": "cancelled",
        }
    assert await end_offsets(settings, [tp]) == before


async def test_a_signal_right_after_a_start_is_accepted(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    """Not in PostgreSQL yet, and its start not yet run (no worker): it may exist, so 202."""
    await wait_for_workers(settings, set())
    eid = new_id("api-early")
    response = await api.post("/executions", json={"workflow": "approver", "execution_id": eid})
    assert response.status_code == 202, response.text
    response = await api.post(f"/executions/{eid}/signals/decision", json={"approved": True})
    assert response.status_code == 202, response.text


async def test_signal_or_cancel_of_an_unknown_execution_is_404_once_the_mirror_caught_up(
    api: httpx.AsyncClient, processes: Processes
) -> None:
    processes.worker()
    processes.mirror()
    eid = new_id("api-ghost")

    async def answer(path: str) -> httpx.Response:
        async with asyncio.timeout(60):  # until the worker and the mirror caught up
            while (response := await api.post(path, json={})).status_code == 202:
                await asyncio.sleep(0.5)
        return response

    for path in (f"/executions/{eid}/signals/approval", f"/executions/{eid}/cancel"):
        response = await answer(path)
        assert response.status_code == 404, response.text
        assert response.json() == {"error": "execution not found", "execution_id": eid}


async def test_the_openapi_documents_every_status(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    paths = document["paths"]

    def statuses(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    assert statuses("/executions", "post") >= {"202", "400", "409", "410", "413", "422", "503"}
    signal = "/executions/{execution_id}/signals/{name}"
    assert statuses(signal, "post") >= {"202", "400", "404", "409", "413", "422", "503"}
    cancel = "/executions/{execution_id}/cancel"
    assert statuses(cancel, "post") >= {"202", "400", "404", "409", "422", "503"}
    for path in ("/executions/{execution_id}", "/executions/{execution_id}/events",
                 "/executions/{execution_id}/state"):  # fmt: skip
        assert statuses(path, "get") >= {"200", "404", "410", "422", "503"}
    # Links (for clients and schemathesis's stateful phase): a start's id into its reads.
    operation_ids = {op["operationId"]: (path, method) for path, ops in paths.items()
                     for method, op in ops.items()}  # fmt: skip
    links = paths["/executions"]["post"]["responses"]["202"]["links"]
    assert {operation_ids[link["operationId"]] for link in links.values()} == {
        ("/executions/{execution_id}", "get"), ("/executions/{execution_id}/events", "get"),
        ("/executions/{execution_id}/state", "get")}  # fmt: skip
    [dlq] = paths["/dlq"]["get"]["responses"]["200"]["links"].values()
    assert operation_ids[dlq["operationId"]] == ("/dlq/{dead_letter_id}", "get")
    assert statuses("/healthz", "get") >= {"200", "503"}
    assert statuses("/cluster", "get") >= {"200", "503"}
    error = paths["/executions"]["post"]["responses"]["409"]["content"]["application/json"]
    assert error["schema"] == {"$ref": "#/components/schemas/ErrorBody"}  # the one shape
    assert document["components"]["schemas"]["ErrorBody"]["required"] == ["error"]


# --- issue 8, item 6: the API starts without Kafka and catches up when it comes ------------------


async def test_the_api_starts_without_kafka_and_recovers(
    settings: Settings, database: None, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(replace(settings, kafka_bootstrap=f"127.0.0.1:{port}"), api_settings(tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=API_HEADERS
        ) as http:
            response = await http.get("/healthz")
            assert response.status_code == 503
            assert response.json() == {
                "status": "degraded",
                "kafka": False,
                "database": True,
                "namespace": settings.namespace,
            }
            response = await http.post("/executions", json={"workflow": "w3"})
            assert response.status_code == 503 and "Kafka" in response.json()["error"]
            assert "execution_id" in response.json()
            response = await http.post("/executions/x-1/signals/go", content=b"1", headers=JSON)
            assert response.status_code == 503

            # The broker "comes back" on the configured address: a forwarder to the real one.
            host, real = settings.kafka_bootstrap.rsplit(":", 1)
            async with forwarder(port, host, int(real)):
                async with asyncio.timeout(30):
                    while (await http.get("/healthz")).status_code != 200:
                        await asyncio.sleep(0.3)
                response = await http.post("/executions", json={"workflow": "w3"})
                assert response.status_code == 202, response.text


@asynccontextmanager
async def forwarder(port: int, host: str, target: int) -> AsyncIterator[None]:
    """Listen on 127.0.0.1:`port` and pipe every connection to host:target."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, target)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()


# --- read your writes -----------------------------------------------------------------------------


async def test_read_your_writes(
    api: httpx.AsyncClient, processes: Processes, pool: asyncpg.Pool, settings: Settings
) -> None:
    worker = processes.worker()
    processes.mirror()
    # A start that waits until the mirror has the execution: the row comes with the 202.
    eid = new_id("ryw")
    response = await api.post("/executions", params={"wait": 60}, json={
        "workflow": "approver", "execution_id": eid, "inputs": {"amount": 5}})  # fmt: skip
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["until"] == {"condition": "visible", "met": True}
    assert body["execution"]["execution_id"] == eid

    # Waiting for a status: pushed by the mirror's NOTIFY, on the API's own LISTEN connection.
    waiting = await api.get(f"/executions/{eid}", params={"until": "waiting", "timeout": 30})
    assert waiting.status_code == 200 and waiting.json()["status"] == "waiting"
    assert waiting.json()["until"] == {"condition": "waiting", "met": True}
    listeners = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query = $1",
        f'LISTEN "{settings.names.mirrored_channel}"',
    )
    assert listeners >= 1
    not_yet = await api.get(f"/executions/{eid}", params={"until": "terminal", "timeout": 0.5})
    assert not_yet.status_code == 200 and not_yet.json()["until"]["met"] is False

    finished = asyncio.create_task(
        api.get(f"/executions/{eid}", params={"until": "terminal", "timeout": 60})
    )
    await asyncio.sleep(0.2)
    signal = await api.post(
        f"/executions/{eid}/signals/decision", json={"approved": True, "by": "ana"}
    )
    assert signal.status_code == 202, signal.text
    done = await finished
    assert done.json()["status"] == "completed" and done.json()["until"]["met"] is True
    # Who ran each step: the worker, named as the partition grid (/cluster, "owner") names it.
    ran_by = settings.names.worker_client_id(f"{socket.gethostname()}:{worker.pid}")
    steps = {s["step"]: s for s in done.json()["steps"]}
    assert [r["worker"] for r in steps["ask"]["runs"]] == [ran_by]
    assert steps["after_approval"]["worker"] == ran_by
    assert [r["worker"] for r in steps["decision"]["runs"]] == [None]  # a wait: no worker ran it
    assert done.json()["owner"] in (ran_by, None)  # None: the group description was slow
    described = await acli(settings, "describe", eid)
    assert described.returncode == 0 and ran_by in described.stdout, described.stdout

    # A GET right after an acknowledged start never answers 404: it waits for the mirror.
    for _ in range(5):
        eid = new_id("ryw-get")
        started = await api.post("/executions", json={"workflow": "w3", "execution_id": eid})
        assert started.status_code == 202
        response = await api.get(f"/executions/{eid}")
        assert response.status_code == 200, response.text

    bad = await api.get(f"/executions/{eid}", params={"until": "finished"})
    assert bad.status_code == 422


async def test_completions_send_a_complete_step_command(
    api: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool
) -> None:
    """POST /completions of a live execution answers 202 and its CompleteStep reaches
    cerebelum.commands; a bad token or both a result and an error are 422."""
    eid = new_id("api-complete")
    await write_history(settings, pool, [
        make_event(eid, 1, ev.EXECUTION_STARTED, AT, workflow="handoff", workflow_version="v",
                   inputs={}),
    ])  # fmt: skip
    tp = TopicPartition(settings.names.commands, partition_for(eid))
    start = (await end_offsets(settings, [tp]))[tp]
    token = f"{eid}/hand_off/2"
    r = await api.post("/completions", json={"token": token, "result": {"signed_by": "ana"}})
    assert r.status_code == 202 and r.json()["completion"] == "hand_off"
    error = {"type": "Declined", "message": "no"}
    r = await api.post("/completions", json={"token": token, "error": error})
    assert r.status_code == 202 and r.json()["outcome"] == "error"
    for body in (
        {"token": "not-a-token", "result": 1},
        {"token": token, "result": 1, "error": error},
        {"token": token, "error": {"message": "no type"}},
    ):
        r = await api.post("/completions", json=body)
        assert r.status_code == 422 and "error" in r.json(), body
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while len(seen) < 2:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    seen += [orjson.loads(m.value) for m in records if m.key == eid.encode()]
    finally:
        await consumer.stop()
    assert [(c["type"], c["step"], c["token"]) for c in seen] == [
        ("CompleteStep", "hand_off", 2),
        ("CompleteStep", "hand_off", 2),
    ]
    assert seen[0]["result"] == {"signed_by": "ana"} and seen[1]["error"] == error
