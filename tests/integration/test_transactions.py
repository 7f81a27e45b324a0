"""aiokafka speaks only version 0 of the transaction requests: prove that commit, abort and
fencing work against the broker we ship (DESIGN.md, "Exactly-once and fencing")."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from cerebelum.config import Settings
from cerebelum.constants import TOPIC_DLQ

pytestmark = pytest.mark.integration

# Any of our topics will do; the probe records carry a unique key and are never decoded.
PROBE_TP = TopicPartition(TOPIC_DLQ, 63)


async def _producer(settings: Settings, txn_id: str) -> AIOKafkaProducer:
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, transactional_id=txn_id)
    await p.start()
    return p


async def _committed_keys(settings: Settings, start: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        consumer.assign([PROBE_TP])
        consumer.seek(PROBE_TP, start)
        end = (await consumer.end_offsets([PROBE_TP]))[PROBE_TP]
        keys: list[bytes] = []
        while await consumer.position(PROBE_TP) < end:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                keys.extend(r.key for r in records)
        return keys
    finally:
        await consumer.stop()


async def _end(settings: Settings) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        return (await consumer.end_offsets([PROBE_TP]))[PROBE_TP]
    finally:
        await consumer.stop()


async def test_commit_abort_and_fence(settings: Settings, topics: None) -> None:
    txn_id = f"probe-{uuid.uuid4().hex}"
    start = await _end(settings)
    first = await _producer(settings, txn_id)
    try:
        async with first.transaction():
            await first.send(PROBE_TP.topic, b"x", b"committed", partition=PROBE_TP.partition)

        await first.begin_transaction()
        await first.send(PROBE_TP.topic, b"x", b"aborted", partition=PROBE_TP.partition)
        await first.abort_transaction()

        # A second producer with the same transactional id bumps the epoch: the first is a zombie.
        await first.begin_transaction()
        await first.send(PROBE_TP.topic, b"x", b"zombie", partition=PROBE_TP.partition)
        second = await _producer(settings, txn_id)
        try:
            with pytest.raises((ProducerFenced, KafkaError)):
                await first.commit_transaction()
            async with second.transaction():
                await second.send(PROBE_TP.topic, b"x", b"successor", partition=PROBE_TP.partition)
        finally:
            await second.stop()
    finally:
        await first.stop()

    keys = await _committed_keys(settings, start)
    assert keys == [b"committed", b"successor"]
