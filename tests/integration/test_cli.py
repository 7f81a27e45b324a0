"""The CLI's commands at their edges: bad ids, a broker away, mistakes it can know about.

Each runs `python -m cerebelum ...` as a user would and reads its exit code and output.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from cerebelum.admin.workflows import publish_workflows, withdraw_workflows
from cerebelum.client import partition_for
from cerebelum.config import Settings
from cerebelum.constants import (
    HEADER_DLQ_EXECUTION_ID,
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE_OFFSET,
    HEADER_DLQ_SOURCE_PARTITION,
    HEADER_DLQ_SOURCE_TOPIC,
)
from cerebelum.core import events as ev
from cerebelum.core.events import make_event
from cerebelum.core.ids import id_problem
from cerebelum.core.workflow import Registry
from cerebelum.db import connect_pool
from cerebelum.mirror.fold import decode_event, sort_and_dedupe
from cerebelum.mirror.store import write_batch
from tests.apps import w3
from tests.conftest import ROOT, process_env
from tests.fakebroker import fake_broker, silent_broker
from tests.helpers import end_offsets, wait_for_workers, worker_member

pytestmark = pytest.mark.integration


async def acli(
    settings: Settings, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python -m cerebelum ARGS` to its end (killed past `timeout` seconds)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cerebelum", *args,
        cwd=ROOT,
        env=process_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        command = " ".join(args)
        raise AssertionError(f"cerebelum {command} still running after {timeout} s") from None
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


# A CLI process takes a few seconds to start on a loaded 2-core box (imports): bounds on wall
# time allow this much beside the command's own --timeout. Without a bound the command hangs.
STARTUP_SLACK_S = 30.0


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
async def pool(settings: Settings, database: None) -> AsyncIterator[asyncpg.Pool]:
    p = await connect_pool(settings.namespace_database_url, min_size=1, max_size=2)
    yield p
    await p.close()


# --- item 2: the id alphabet ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "what", "bad"),
    [
        (("start", "w3", "--id", "a/b"), "execution_id", "a/b"),
        (("start", "w3", "--id", "tab\there"), "execution_id", "tab\there"),
        (("start", "no such workflow"), "workflow", "no such workflow"),
        (("signal", "a b", "approval"), "execution_id", "a b"),
        (("signal", "fine-id", "appro/val"), "signal", "appro/val"),
        (("cancel", "x\x01y"), "execution_id", "x\x01y"),
        (("status", "..%2F"), "execution_id", "..%2F"),
    ],
)
async def test_bad_ids_exit_2_with_one_line(
    settings: Settings, topics: None, args: tuple[str, ...], what: str, bad: str
) -> None:
    before = await end_offsets(settings, settings.names.commands)
    result = await acli(settings, *args)
    assert result.returncode == 2, result
    assert one_error_line(result) == f"error: {id_problem(bad, what)}"
    assert await end_offsets(settings, settings.names.commands) == before


# --- item 6: a broker away: one line, non-zero, in bounded time -----------------------------------


AWAY_COMMANDS = [("start", "w3", "--id", "cli-away"), ("signal", "cli-away", "approval"),
                 ("cancel", "cli-away")]  # fmt: skip


async def test_commands_give_up_in_bounded_time_when_kafka_is_away(settings: Settings) -> None:
    """start, signal and cancel against a closed port, a broker that cannot allocate producer
    ids and one that never answers: each gives up within its --timeout (2 s) with one line;
    and without --timeout within the default 15 s. All side by side: each waits out its own
    bound (what is measured), not the others'."""

    async def gives_up(address: str, args: tuple[str, ...]) -> None:
        began = time.monotonic()
        result = await acli(
            replace(settings, kafka_bootstrap=address), *args, "--timeout", "2", timeout=60
        )
        assert time.monotonic() - began < 2 + STARTUP_SLACK_S, (address, args)
        assert result.returncode == 1, result
        line = one_error_line(result)
        assert address in line and "2 s" in line, line

    async def default_bound(address: str) -> None:
        began = time.monotonic()
        result = await acli(
            replace(settings, kafka_bootstrap=address), "cancel", "cli-default", timeout=90
        )
        assert 14 < time.monotonic() - began < 15 + STARTUP_SLACK_S
        assert result.returncode == 1 and "15 s" in one_error_line(result)

    with fake_broker() as cannot_allocate_producer_ids, silent_broker() as silent:
        addresses = (f"127.0.0.1:{closed_port()}", cannot_allocate_producer_ids, silent)
        await asyncio.gather(
            default_bound(cannot_allocate_producer_ids),
            *(gives_up(a, args) for a in addresses for args in AWAY_COMMANDS),
        )


# --- item 8: mistakes the CLI can know about ------------------------------------------------------


async def test_start_of_a_workflow_no_live_worker_runs_exits_1(
    settings: Settings, topics: None, unique
) -> None:
    worker_id = unique("cli-worker")
    await publish_workflows(settings, worker_id, Registry([w3]))
    try:
        async with worker_member(settings, worker_id):
            await wait_for_workers(settings, {settings.names.worker_client_id(worker_id)})
            before = await end_offsets(settings, settings.names.commands)
            result = await acli(settings, "start", "no-such-workflow", "--id", unique("nope"))
            assert result.returncode == 1, result
            line = one_error_line(result)
            assert "no live worker runs workflow 'no-such-workflow'" in line
            assert "w3" in line  # the workflows that do exist
            assert await end_offsets(settings, settings.names.commands) == before

            result = await acli(settings, "start", "w3", "--id", unique("yes"))
            assert result.returncode == 0, result
    finally:
        await withdraw_workflows(settings, worker_id)


async def test_signal_or_cancel_of_an_ended_execution_exits_1(
    settings: Settings, pool: asyncpg.Pool, unique
) -> None:
    eid = unique("cli-ended")
    history = [
        make_event(eid, 1, ev.EXECUTION_STARTED, 1, workflow="w3", workflow_version="v",
                   inputs={}),
        make_event(eid, 2, ev.EXECUTION_FAILED, 2, error={"type": "X", "message": "boom"}),
    ]  # fmt: skip
    rows = sort_and_dedupe(decode_event(orjson.dumps(e), partition_for(eid), i)
                           for i, e in enumerate(history))  # fmt: skip
    async with pool.acquire() as conn:
        await write_batch(conn, rows, settings.names.mirrored_channel)
    before = await end_offsets(settings, settings.names.commands)
    for args in (("signal", eid, "approval"), ("cancel", eid)):
        result = await acli(settings, *args)
        assert result.returncode == 1, result
        assert one_error_line(result) == f"error: execution {eid} has ended (failed)"
    assert await end_offsets(settings, settings.names.commands) == before


async def test_start_wait_reports_a_dead_lettered_start(
    settings: Settings, topics: None, unique
) -> None:
    """`start --wait` ends with the DLQ's reason as soon as the command is refused."""
    eid = unique("cli-dlq")
    p = partition_for(eid)
    before = await end_offsets(settings, settings.names.commands)
    began = time.monotonic()
    run = asyncio.ensure_future(
        acli(settings, "start", "nope", "--id", eid, "--wait", "--timeout", "120", timeout=150)
    )
    async with asyncio.timeout(20):  # the CLI's start lands on p
        while (after := await end_offsets(settings, settings.names.commands)) == before:
            await asyncio.sleep(0.1)
    offset = next(o for tp, o in after.items() if tp.partition == p) - 1
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.names.dlq, b"{}", eid.encode(), partition=p,
            headers=[
                (HEADER_DLQ_REASON, b"unknown workflow 'nope'"),
                (HEADER_DLQ_SOURCE_TOPIC, settings.names.commands.encode()),
                (HEADER_DLQ_SOURCE_PARTITION, str(p).encode()),
                (HEADER_DLQ_SOURCE_OFFSET, str(offset).encode()),
                (HEADER_DLQ_EXECUTION_ID, eid.encode()),
            ],
        )  # fmt: skip
    finally:
        await producer.stop()
    result = await run
    assert time.monotonic() - began < 60  # not the --timeout
    assert result.returncode == 1, result
    assert one_error_line(result) == (
        f"error: the command for {eid} was refused: unknown workflow 'nope'"
    )
