"""Dead letters end to end: a worker refuses a command, the mirror copies the DLQ record into
PostgreSQL, the API lists and shows it, and a replay keyed by the execution id runs it."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from cerebelum.config import Settings
from cerebelum.core.commands import start_command
from tests.conftest import Processes
from tests.helpers import in_process_api, wait_for_workers, worker_member
from tests.integration.test_cli import acli

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(
    settings: Settings, topics: None, database: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_api(settings, tmp_path_factory.mktemp("api")) as http:
        yield http


async def listed(api: httpx.AsyncClient, execution_id: str, timeout: float = 60) -> list[dict]:
    """The dead letters of `execution_id`, once the mirror has one."""
    async with asyncio.timeout(timeout):
        while True:
            response = await api.get("/dlq", params={"execution_id": execution_id})
            assert response.status_code == 200, response.text
            if found := response.json()["dead_letters"]:
                return list(found)
            await asyncio.sleep(0.3)


async def test_a_command_off_its_home_is_listed_shown_and_replayed_home(
    settings: Settings, processes: Processes, api: httpx.AsyncClient
) -> None:
    processes.worker()
    processes.mirror()
    eid = f"dl-{uuid.uuid4().hex}"
    command = start_command(eid, "w3", {"n": 4})
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:  # keyed by another id: refused, whatever partition it lands on
        await producer.send_and_wait(settings.names.commands, command, f"other-{eid}".encode())
        await producer.send_and_wait(settings.names.commands, b"{not json", f"nj-{eid}".encode())
    finally:
        await producer.stop()

    [letter] = await listed(api, eid)
    assert "a command's key must be its execution_id" in letter["reason"]
    assert letter["command"]["execution_id"] == eid and letter["key"] == f"other-{eid}"
    assert letter["source"]["topic"] == settings.names.commands and letter["replayed_at"] is None
    shown = await api.get(f"/dlq/{letter['id']}")
    assert shown.status_code == 200 and shown.json()["command"]["inputs"] == {"n": 4}
    by_reason = await api.get("/dlq", params={"reason": "KEY MUST BE", "limit": 500})
    assert letter["id"] in [d["id"] for d in by_reason.json()["dead_letters"]]

    replay = await api.post(f"/dlq/{letter['id']}/replay", json={})
    assert replay.status_code == 202, replay.text
    assert replay.json()["execution_id"] == eid
    done = await api.get(f"/executions/{eid}", params={"until": "completed", "timeout": 60})
    assert done.status_code == 200 and done.json()["until"]["met"] is True
    assert done.json()["output"] == {"n": 10}  # w3: (4 + 1) * 2

    again = await api.post(f"/dlq/{letter['id']}/replay", json={})
    assert again.status_code == 409 and again.json()["replayed_by"] == "tests-admin"
    forced = await api.post(f"/dlq/{letter['id']}/replay", params={"force": "true"}, json={})
    assert forced.status_code == 202  # a second start of the same id starts nothing

    bad_json = await api.get("/dlq", params={"reason": "not valid JSON", "limit": 500})
    [garbage] = [d for d in bad_json.json()["dead_letters"] if d["key"] == f"nj-{eid}"]
    assert garbage["command"] is None and garbage["value_base64"] == "e25vdCBqc29u"
    refused = await api.post(f"/dlq/{garbage['id']}/replay", json={})
    assert refused.status_code == 409 and "names no valid execution id" in refused.text

    listed_cli = await acli(settings, "dlq", "list", "--execution-id", eid, "--json")
    assert [orjson.loads(line)["id"] for line in listed_cli.stdout.splitlines()] == [letter["id"]]
    shown_cli = await acli(settings, "dlq", "show", letter["id"])
    assert orjson.loads(shown_cli.stdout)["replayed_by"] == "tests-admin"
    replayed_cli = await acli(settings, "dlq", "replay", letter["id"])
    assert replayed_cli.returncode == 1 and "replayed before" in replayed_cli.stderr
    replayed_cli = await acli(settings, "dlq", "replay", letter["id"], "--force")
    assert replayed_cli.returncode == 0, replayed_cli.stderr
    assert f"replayed {letter['id']} to {eid}" in replayed_cli.stdout

    first = (await api.get("/dlq", params={"limit": 1})).json()
    second = (await api.get("/dlq", params={"limit": 1, "cursor": first["next_cursor"]})).json()
    assert first["dead_letters"][0]["id"] != second["dead_letters"][0]["id"]
    assert (await api.get("/dlq/1-999999999")).status_code == 404
    assert (await api.get("/dlq/bad")).status_code == 422


async def test_a_refused_start_is_what_reads_of_its_execution_answer(
    settings: Settings, processes: Processes, api: httpx.AsyncClient
) -> None:
    """A start Kafka took but the workers refused: POST ?wait= and every GET of the id answer
    410 start_refused with the dead letter, never a timeout or a 404; so does the CLI."""
    worker = processes.worker()
    processes.mirror()
    # A live member that has not published what it runs (an older worker, or one starting):
    # the API cannot be sure no worker runs `ghost`, so it takes the start; the real worker,
    # which owns every partition, neither has it nor sees a live worker that publishes it
    # (it would hold the start then, decisions.md §6), and dead-letters it.
    ghost, ghost_worker = f"ghost-{uuid.uuid4().hex[:8]}", f"ghost-worker-{uuid.uuid4().hex}"
    eid = f"refused-{uuid.uuid4().hex}"
    async with worker_member(settings, ghost_worker):
        real = settings.names.worker_client_id(f"{socket.gethostname()}:{worker.pid}")
        await wait_for_workers(settings, {settings.names.worker_client_id(ghost_worker), real})
        started = time.monotonic()
        answer = await api.post("/executions", params={"wait": 30},
                                json={"workflow": ghost, "execution_id": eid})  # fmt: skip
        waited = time.monotonic() - started
    assert answer.status_code == 410, answer.text
    fate = answer.json()
    assert fate["code"] == "start_refused" and fate["execution_id"] == eid
    assert fate["reason"] == f"unknown workflow {ghost!r}" and fate["reason"] in fate["error"]
    assert waited < 25  # the fate ended the wait, not its timeout
    for path in (f"/executions/{eid}", f"/executions/{eid}/events", f"/executions/{eid}/state",
                 f"/executions/{eid}?until=completed&timeout=30"):  # fmt: skip
        response = await api.get(path)
        assert response.status_code == 410, (path, response.text)
        assert response.json()["dead_letter_id"] == fate["dead_letter_id"]
    letter = await api.get(f"/dlq/{fate['dead_letter_id']}")
    assert letter.status_code == 200 and letter.json()["command"]["workflow"] == ghost
    for command in ("describe", "status"):
        said = await acli(settings, command, eid)
        assert said.returncode == 1 and said.stdout == ""
        assert said.stderr.count("\n") == 1 and "start was refused" in said.stderr
        assert fate["dead_letter_id"] in said.stderr
    missing = await api.get(f"/executions/never-{uuid.uuid4().hex}")
    assert missing.status_code == 404
    # A new start of the same id that runs: the old refusal is not its fate.
    again = await api.post("/executions", json={"workflow": "w3", "execution_id": eid,
                                                "inputs": {"n": 1}})  # fmt: skip
    assert again.status_code == 202, again.text
    done = await api.get(f"/executions/{eid}", params={"until": "completed", "timeout": 30})
    assert done.status_code == 200 and done.json()["output"] == {"n": 4}, done.text
