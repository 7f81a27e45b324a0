"""kill -9 a worker while executions run: every execution still completes, each step result is
recorded once, and versions stay gapless."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cerebelum.client import Client
from cerebelum.config import Settings
from cerebelum.constants import PARTITIONS, TOPIC_EVENTS

pytestmark = [pytest.mark.integration, pytest.mark.fault]

N = 300


async def events_since(
    settings: Settings, since: dict[TopicPartition, int], ids: set[str]
) -> dict[str, list[dict]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed"
    )
    await consumer.start()
    out: dict[str, list[dict]] = {eid: [] for eid in ids}
    try:
        consumer.assign(list(since))
        for tp, offset in since.items():
            consumer.seek(tp, offset)
        ends = await consumer.end_offsets(list(since))
        while [tp for tp in since if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    key = r.key.decode()
                    if key in out:
                        out[key].append(orjson.loads(r.value))
        return out
    finally:
        await consumer.stop()


async def end_offsets(settings: Settings) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        return await consumer.end_offsets(
            [TopicPartition(TOPIC_EVENTS, p) for p in range(PARTITIONS)]
        )
    finally:
        await consumer.stop()


async def test_kill_one_of_two_workers(
    settings: Settings, processes, client: Client, unique
) -> None:
    since = await end_offsets(settings)
    victim = processes.worker()
    processes.worker()
    ids = [unique(f"slow-{i}") for i in range(N)]
    await asyncio.gather(
        *[await client.start_nowait("slow", {"n": i, "pause": 1.0}, eid) for i, eid in enumerate(ids)]
    )
    waits = [asyncio.ensure_future(client.wait(eid, timeout=120)) for eid in ids]
    # Each execution takes 3 s of steps: once the first completes, the rest are mid-flight.
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    victim.kill()
    victim.wait()
    assert len(pending) > N // 2, "the kill must land while most executions still run"

    results = await asyncio.gather(*waits)
    assert [r.status for r in results] == ["completed"] * N
    assert [r.output for r in results] == [{"c": (i + 1) * 10} for i in range(N)]

    history = await events_since(settings, since, set(ids))
    for eid in ids:
        events = history[eid]
        assert [e["version"] for e in events] == list(range(1, len(events) + 1)), eid
        completed = Counter(e["step"] for e in events if e["type"] == "StepCompleted")
        assert completed == {"slow_a": 1, "slow_b": 1, "slow_c": 1}, eid
        assert sum(e["type"] == "ExecutionCompleted" for e in events) == 1
