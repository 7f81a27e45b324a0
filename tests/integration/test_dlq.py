"""Bad commands go to cerebelum.dlq with the reason in a header; good ones still complete."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from cerebelum.client import Client
from cerebelum.config import Settings
from cerebelum.constants import HEADER_DLQ_REASON, PARTITIONS

pytestmark = pytest.mark.integration


async def dlq_positions(settings: Settings) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.names.dlq, p) for p in range(PARTITIONS)]
        return await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


async def read_dlq(
    settings: Settings, since: dict[TopicPartition, int], keys: set[bytes], timeout: float
) -> dict[bytes, str]:
    """The DLQ reason of each of `keys`, read from the offsets in `since`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed"
    )
    await consumer.start()
    found: dict[bytes, str] = {}
    try:
        consumer.assign(list(since))
        for tp, offset in since.items():
            consumer.seek(tp, offset)
        deadline = asyncio.get_running_loop().time() + timeout
        while len(found) < len(keys) and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    if r.key in keys:
                        found[r.key] = dict(r.headers)[HEADER_DLQ_REASON].decode()
        return found
    finally:
        await consumer.stop()


async def test_bad_commands_go_to_dlq(
    settings: Settings, processes, client: Client, unique
) -> None:
    since = await dlq_positions(settings)
    processes.worker()
    bad = {
        unique("not-json").encode(): b"{this is not json",
        unique("not-object").encode(): b"[1, 2, 3]",
        unique("no-id").encode(): b'{"type": "StartExecution", "workflow": "w3"}',
        unique("no-workflow").encode(): b'{"type": "StartExecution", "execution_id": "x1"}',
        # keyed by its own id, so it is refused for its workflow, not for its key
        unique("unknown").encode(): b'{"type": "StartExecution", "execution_id": "%s", '
        b'"workflow": "no-such-workflow", "inputs": {}}' % unique("unknown").encode(),
        unique("bad-type").encode(): b'{"type": "LaunchMissiles", "execution_id": "m1"}',
    }
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        good_before = unique("good-before")
        await client.start("w3", {"n": 1}, good_before)
        for key, value in bad.items():
            await producer.send_and_wait(settings.names.commands, value, key)
        good_after = unique("good-after")
        await client.start("w3", {"n": 2}, good_after)
    finally:
        await producer.stop()

    reasons = await read_dlq(settings, since, set(bad), timeout=60)
    assert set(reasons) == set(bad)
    assert "not valid JSON" in reasons[unique("not-json").encode()]
    assert "JSON object" in reasons[unique("not-object").encode()]
    assert "execution_id" in reasons[unique("no-id").encode()]
    assert "workflow" in reasons[unique("no-workflow").encode()]
    assert "unknown workflow 'no-such-workflow'" in reasons[unique("unknown").encode()]
    assert "unknown command type" in reasons[unique("bad-type").encode()]

    for eid, n in ((good_before, 1), (good_after, 2)):
        result = await client.wait(eid, timeout=60)
        assert result.status == "completed"
        assert result.output == {"n": (n + 1) * 2}
