"""Issue 8, through a real worker on the real broker: whatever a producer sends, one execution per
id, and no input that silently stalls or loses work.

- a command keyed otherwise than its execution id (null key, another key), or sitting on
  another partition than the id's home, is dead-lettered and never executed; a later, well
  keyed start of that id runs it once, on its home partition only;
- ids the rest of the system cannot handle (NUL, control characters, "/") are dead-lettered;
- a bug in the state machine (injected: tests/apps.py BuggyStep) costs one input: a start it
  breaks is dead-lettered, an outcome it breaks fails its execution with an InternalError,
  histories stay gapless, and the other executions complete;
- a signal or cancel for an execution that has ended is dead-lettered with the reason.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from cerebelum.client import Client, partition_for
from cerebelum.config import Settings
from cerebelum.constants import HEADER_DLQ_EXECUTION_ID, HEADER_DLQ_REASON, PARTITIONS
from cerebelum.core.commands import signal_command, start_command
from tests.conftest import module_worker
from tests.helpers import assert_gapless, end_offsets, events_since

pytestmark = pytest.mark.integration


worker = module_worker("integrity")


async def produce(settings: Settings, value: bytes, key: bytes | None, partition: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(settings.names.commands, value, key, partition=partition)
    finally:
        await producer.stop()


async def dead_letters(
    settings: Settings, since: dict[TopicPartition, int], wanted: int, timeout: float = 60
) -> list[dict[str, str]]:
    """The headers of the DLQ records written after `since`, once there are `wanted`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed"
    )
    await consumer.start()
    found: list[dict[str, str]] = []
    try:
        consumer.assign(list(since))
        for tp, offset in since.items():
            consumer.seek(tp, offset)
        deadline = asyncio.get_running_loop().time() + timeout
        while len(found) < wanted and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [{k: v.decode() for k, v in r.headers} for r in records]
        return found
    finally:
        await consumer.stop()


async def partitions_with_events(settings: Settings, eid: str) -> set[int]:
    """Every partition of cerebelum.events holding an event of `eid`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed"
    )
    await consumer.start()
    found: set[int] = set()
    try:
        tps = [TopicPartition(settings.names.events, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                if any(r.key == eid.encode() for r in records):
                    found.add(tp.partition)
        return found
    finally:
        await consumer.stop()


async def dlq_positions(settings: Settings) -> dict[TopicPartition, int]:
    return await end_offsets(settings, settings.names.dlq)


async def test_one_execution_per_id_whatever_the_key(
    settings: Settings, worker: None, client: Client, unique
) -> None:
    since_dlq = await dlq_positions(settings)
    since = await end_offsets(settings)
    eid = unique("keyed")
    home = partition_for(eid)
    elsewhere = (home + 1) % PARTITIONS
    command = start_command(eid, "w3", {"n": 1})
    await produce(settings, command, None, elsewhere)  # a producer that forgot the key
    await produce(settings, command, b"not-" + eid.encode(), elsewhere)  # a wrong key
    await produce(settings, command, eid.encode(), elsewhere)  # right key, wrong partition
    letters = await dead_letters(settings, since_dlq, 3)
    reasons = sorted(h[HEADER_DLQ_REASON] for h in letters if h.get(HEADER_DLQ_EXECUTION_ID) == eid)
    assert len(reasons) == 3, letters
    assert sum("has no key" in r for r in reasons) == 1
    assert sum("key b'not-" in r for r in reasons) == 1
    assert sum(f"lives on partition {home}" in r for r in reasons) == 1

    result = await client.run("w3", {"n": 1}, eid, timeout=60)  # well keyed: runs, once
    assert result.status == "completed" and result.output == {"n": 4}
    events = (await events_since(settings, since, {eid}))[eid]
    assert_gapless(events)
    assert [e["type"] for e in events].count("ExecutionStarted") == 1
    assert await partitions_with_events(settings, eid) == {home}


@pytest.mark.parametrize(
    ("execution_id", "found"), [("nul\x00id", "'\\x00'"), ("a/b", "'/'"), ("tab\tid", "'\\t'")]
)
async def test_ids_outside_the_alphabet_are_dead_lettered(
    settings: Settings, worker: None, execution_id: str, found: str
) -> None:
    since_dlq = await dlq_positions(settings)
    command = start_command(execution_id, "w3", {"n": 1})
    await produce(settings, command, execution_id.encode(), partition_for(execution_id))
    (letter,) = await dead_letters(settings, since_dlq, 1)
    assert "may only contain" in letter[HEADER_DLQ_REASON] and found in letter[HEADER_DLQ_REASON]


async def test_a_bug_in_decide_costs_one_input_and_nothing_else(
    settings: Settings, worker: None, client: Client, unique
) -> None:
    since = await end_offsets(settings)
    since_dlq = await dlq_positions(settings)
    broken_start = unique("bug-start")
    broken_outcome = unique("bug-outcome")
    others = [unique(f"bystander-{i}") for i in range(20)]
    acks = [await client.start_nowait("bug_at_start", {}, broken_start)]
    acks += [await client.start_nowait("bug_in_outcome", {}, broken_outcome)]
    acks += [await client.start_nowait("w3", {"n": i}, eid) for i, eid in enumerate(others)]
    await asyncio.gather(*acks)

    failed = await client.wait(broken_outcome, timeout=60)  # before the fix: never ends
    assert failed.status == "failed" and failed.error is not None
    assert failed.error["type"] == "InternalError"
    assert "injected bug" in failed.error["message"]
    results = await asyncio.gather(*(client.wait(eid, timeout=60) for eid in others))
    assert all(r.status == "completed" for r in results)
    (letter,) = [
        h
        for h in await dead_letters(settings, since_dlq, 1)
        if h.get(HEADER_DLQ_EXECUTION_ID) == broken_start
    ]
    assert letter[HEADER_DLQ_REASON].startswith("internal error: RuntimeError: injected bug")
    histories = await events_since(settings, since, {broken_outcome, broken_start, *others})
    assert histories[broken_start] == []
    for eid in [broken_outcome, *others]:
        assert_gapless(histories[eid])
    assert [e["type"] for e in histories[broken_outcome]][-1] == "ExecutionFailed"


async def test_a_signal_for_an_ended_execution_is_dead_lettered(
    settings: Settings, worker: None, client: Client, unique
) -> None:
    eid = unique("ended")
    assert (await client.run("w3", {"n": 1}, eid, timeout=60)).status == "completed"
    since_dlq = await dlq_positions(settings)
    await produce(settings, signal_command(eid, "approval", {}), eid.encode(), partition_for(eid))
    (letter,) = await dead_letters(settings, since_dlq, 1)
    assert letter[HEADER_DLQ_EXECUTION_ID] == eid
    assert "which has ended (completed)" in letter[HEADER_DLQ_REASON]
