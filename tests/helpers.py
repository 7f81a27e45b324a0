"""Reading Cerebelum's topics back in tests."""

from __future__ import annotations

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from cerebelum.client import partition_for
from cerebelum.config import Settings
from cerebelum.constants import PARTITIONS, TOPIC_EVENTS


async def end_offsets(settings: Settings, topic: str = TOPIC_EVENTS) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        return await consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
    finally:
        await consumer.stop()


async def events_since(
    settings: Settings, since: dict[TopicPartition, int], ids: set[str]
) -> dict[str, list[dict]]:
    """Every committed event of `ids`, read from the offsets in `since` to the current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed"
    )
    await consumer.start()
    out: dict[str, list[dict]] = {eid: [] for eid in ids}
    try:
        wanted = {
            tp: off
            for tp, off in since.items()
            if tp.partition in {partition_for(eid) for eid in ids}
        }
        consumer.assign(list(wanted))
        for tp, offset in wanted.items():
            consumer.seek(tp, offset)
        ends = await consumer.end_offsets(list(wanted))
        while [tp for tp in wanted if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    key = r.key.decode()
                    if key in out:
                        out[key].append(orjson.loads(r.value))
        return out
    finally:
        await consumer.stop()


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def assert_gapless(events: list[dict]) -> None:
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))


def assert_results_recorded_once(events: list[dict]) -> None:
    """Each dispatch (StepScheduled, or StepRescheduled after an owner change) is answered by at
    most one StepCompleted/StepFailed."""
    open_steps: dict[str, int] = {}
    for e in events:
        if e["type"] in ("StepScheduled", "StepRescheduled"):
            open_steps[e["step"]] = e["version"]
        elif e["type"] in ("StepCompleted", "StepFailed") and "signal" not in e:
            assert e["step"] in open_steps, f"{e['step']} answered twice: {e}"
            del open_steps[e["step"]]
