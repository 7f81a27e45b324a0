"""The Python client at its edges: bad ids, a refused command, an idle listener, a broker away.

No worker runs in this module: a dead-lettered command is produced by the test, in the shape a
worker gives it (docs/start-command.md), so the client's side is tested on its own.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.conn import AIOKafkaConnection

from cerebelum.client import Client, partition_for
from cerebelum.config import Settings
from cerebelum.constants import (
    HEADER_DLQ_EXECUTION_ID,
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE_OFFSET,
    HEADER_DLQ_SOURCE_PARTITION,
    HEADER_DLQ_SOURCE_TOPIC,
    Names,
)
from cerebelum.core.commands import signal_command, start_command
from cerebelum.core.ids import id_problem
from cerebelum.errors import CerebelumError
from tests.fakebroker import fake_broker, silent_broker
from tests.helpers import end_offsets

pytestmark = pytest.mark.integration

BAD_IDS = ["a/b", "nul\x00in-it", "line\nbreak", "-leading-dash", "ü", "", "x" * 201]


@pytest.fixture
async def producer(settings: Settings, topics: None) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await p.start()
    yield p
    await p.stop()


async def dead_letter(
    producer: AIOKafkaProducer,
    names: Names,
    value: bytes,
    reason: str,
    *,
    key: bytes | None,
    execution_id: str | None,
    source: tuple[int, int],
) -> None:
    """A DLQ record as a worker writes it: the command's value and key, the reason and origin."""
    headers = [
        (HEADER_DLQ_REASON, reason.encode()),
        (HEADER_DLQ_SOURCE_TOPIC, names.commands.encode()),
        (HEADER_DLQ_SOURCE_PARTITION, str(source[0]).encode()),
        (HEADER_DLQ_SOURCE_OFFSET, str(source[1]).encode()),
    ]
    if execution_id is not None:
        headers.append((HEADER_DLQ_EXECUTION_ID, execution_id.encode()))
    await producer.send_and_wait(names.dlq, value, key, partition=source[0], headers=headers)


# --- item 2: the id alphabet ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_bad_ids_are_refused_before_producing(
    settings: Settings, client: Client, bad: str
) -> None:
    before = await end_offsets(settings, settings.names.commands)
    attempts: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("execution_id", lambda: client.start("w3", {}, bad)),
        ("execution_id", lambda: client.signal(bad, "approval")),
        ("execution_id", lambda: client.cancel(bad)),
        ("execution_id", lambda: client.run("w3", {}, bad, timeout=1)),
        ("workflow", lambda: client.start(bad, {}, "fine-id")),
        ("signal", lambda: client.signal("fine-id", bad)),
    ]
    for what, attempt in attempts:
        with pytest.raises(CerebelumError) as caught:
            await attempt()
        from cerebelum.errors import InvalidId

        assert isinstance(caught.value, InvalidId) and isinstance(caught.value, ValueError)
        assert str(caught.value) == id_problem(bad, what)
        assert (caught.value.what, caught.value.value) == (what, bad)
    assert await end_offsets(settings, settings.names.commands) == before


async def test_ids_of_schedules_and_limiters_are_refused_before_producing(
    settings: Settings, client: Client
) -> None:
    from cerebelum.errors import InvalidId

    before = await end_offsets(settings, settings.names.commands)
    for eid in ("schedule.nightly", "concurrency.order.c-1", "rate.call.k"):
        with pytest.raises(InvalidId, match="reserved for schedules and limiters"):
            await client.start("w3", {}, eid)
    assert await end_offsets(settings, settings.names.commands) == before


# --- item 8c: a dead-lettered command is an error, not a timeout ----------------------------------


async def test_run_fails_at_once_when_its_start_is_dead_lettered(
    settings: Settings, client: Client, producer: AIOKafkaProducer, unique
) -> None:
    """The client knows where its start landed: only the DLQ record of that command fails it."""
    eid = unique("rejected")
    p = partition_for(eid)
    before = await end_offsets(settings, settings.names.commands)
    start = asyncio.ensure_future(client.run("no-such-workflow", {}, eid, timeout=30))
    async with asyncio.timeout(10):
        while (await end_offsets(settings, settings.names.commands)) == before:
            await asyncio.sleep(0.05)
    offset = next(o for tp, o in (await end_offsets(settings, settings.names.commands)).items()
                  if tp.partition == p) - 1  # fmt: skip
    value = start_command(eid, "no-such-workflow", {})

    # Someone else's command for the same id, dead-lettered: not the one this client sent.
    await dead_letter(
        producer,
        settings.names,
        value,
        "wrong partition",
        key=None,
        execution_id=eid,
        source=((p + 1) % 64, 7),
    )
    await asyncio.sleep(1.5)
    assert not start.done()

    began = time.monotonic()
    await dead_letter(
        producer,
        settings.names,
        value,
        "unknown workflow 'no-such-workflow'",
        key=eid.encode(),
        execution_id=eid,
        source=(p, offset),
    )
    with pytest.raises(CerebelumError) as caught:
        await start
    assert time.monotonic() - began < 10
    from cerebelum.errors import CommandRejected

    assert isinstance(caught.value, CommandRejected)
    assert caught.value.execution_id == eid
    assert caught.value.reason == "unknown workflow 'no-such-workflow'"
    assert isinstance(caught.value, CerebelumError)


async def test_wait_fails_on_a_dead_lettered_start_from_anyone(
    settings: Settings, client: Client, producer: AIOKafkaProducer, unique
) -> None:
    """A start produced elsewhere: matched by the DLQ header, else (older workers) by the key;
    a refused signal does not end the wait (the execution carries on without it)."""
    by_header, by_key = unique("by-header"), unique("by-key")
    waits = {
        eid: asyncio.ensure_future(client.wait(eid, timeout=30)) for eid in (by_header, by_key)
    }
    await asyncio.sleep(0.2)

    await dead_letter(
        producer,
        settings.names,
        signal_command(by_header, "approval", None),
        "payload too large",
        key=by_header.encode(),
        execution_id=by_header,
        source=(3, 1),
    )
    await asyncio.sleep(1.5)
    assert not waits[by_header].done()

    await dead_letter(
        producer,
        settings.names,
        start_command(by_header, "nope", {}),
        "unknown workflow 'nope'",
        key=None,
        execution_id=by_header,
        source=(3, 2),
    )
    await dead_letter(
        producer,
        settings.names,
        b"{not json",
        "value is not valid JSON",
        key=by_key.encode(),
        execution_id=None,
        source=(4, 9),
    )
    for eid, reason in (
        (by_header, "unknown workflow 'nope'"),
        (by_key, "value is not valid JSON"),
    ):
        with pytest.raises(CerebelumError) as caught:
            await asyncio.wait_for(waits[eid], 5)
        assert (caught.value.execution_id, caught.value.reason) == (eid, reason)  # type: ignore[attr-defined]


async def test_a_rejection_before_wait_is_kept(
    settings: Settings, client: Client, producer: AIOKafkaProducer, unique
) -> None:
    eid = unique("early")
    await dead_letter(
        producer,
        settings.names,
        start_command(eid, "nope", {}),
        "unknown workflow 'nope'",
        key=eid.encode(),
        execution_id=eid,
        source=(5, 5),
    )
    await asyncio.sleep(1.5)  # the listener has seen it
    with pytest.raises(CerebelumError, match="unknown workflow 'nope'"):
        await client.wait(eid, timeout=5)


# --- item 8d: an idle listener long-polls ---------------------------------------------------------


async def test_an_idle_listener_long_polls(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fetch requests while nothing happens: one per long poll, not one every 5 ms."""
    fetches = 0
    send = AIOKafkaConnection.send

    def counting(self: AIOKafkaConnection, request: object, *args: object, **kw: object) -> object:
        nonlocal fetches
        if type(request).__name__.startswith("FetchRequest"):
            fetches += 1
        return send(self, request, *args, **kw)

    monkeypatch.setattr(AIOKafkaConnection, "send", counting)
    await asyncio.sleep(3.0)
    # 500 ms long polls over events and DLQ: ~6 per broker in 3 s (5 ms waits: hundreds).
    assert fetches <= 20, fetches


# --- item 6: a broker away is an error within the client's bound ----------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_client_gives_up_within_its_timeout(settings: Settings) -> None:
    with fake_broker() as cannot_allocate_producer_ids, silent_broker() as silent:
        for address in (f"127.0.0.1:{closed_port()}", cannot_allocate_producer_ids, silent):
            began = time.monotonic()
            with pytest.raises(CerebelumError) as caught:
                async with asyncio.timeout(30):  # today: a hang
                    async with Client(replace(settings, kafka_bootstrap=address), timeout=2):
                        pass
            assert time.monotonic() - began < 10, address
            assert address in str(caught.value) and "2 s" in str(caught.value)
            from cerebelum.errors import KafkaUnavailable

            assert isinstance(caught.value, KafkaUnavailable)
