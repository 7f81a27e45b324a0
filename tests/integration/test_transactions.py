"""aiokafka speaks only version 0 of the transaction requests: prove that commit, abort and
fencing work against the broker we ship (DESIGN.md, "Exactly-once and fencing")."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from cerebelum.config import Settings

pytestmark = pytest.mark.integration

# Any of our topics will do; the probe records carry a unique key and are never decoded.


def probe_tp(settings: Settings) -> TopicPartition:
    return TopicPartition(settings.names.dlq, 63)


async def _producer(settings: Settings, txn_id: str) -> AIOKafkaProducer:
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, transactional_id=txn_id)
    await p.start()
    return p


async def _committed_keys(settings: Settings, start: int) -> list[bytes]:
    tp = probe_tp(settings)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        end = (await consumer.end_offsets([tp]))[tp]
        keys: list[bytes] = []
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                keys.extend(r.key for r in records)
        return keys
    finally:
        await consumer.stop()


async def _end(settings: Settings) -> int:
    tp = probe_tp(settings)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


async def test_commit_abort_and_fence(settings: Settings, topics: None) -> None:
    tp = probe_tp(settings)
    txn_id = f"probe-{uuid.uuid4().hex}"
    start = await _end(settings)
    first = await _producer(settings, txn_id)
    try:
        async with first.transaction():
            await first.send(tp.topic, b"x", b"committed", partition=tp.partition)

        await first.begin_transaction()
        await first.send(tp.topic, b"x", b"aborted", partition=tp.partition)
        await first.abort_transaction()

        # A second producer with the same transactional id bumps the epoch: the first is a zombie.
        await first.begin_transaction()
        await first.send(tp.topic, b"x", b"zombie", partition=tp.partition)
        second = await _producer(settings, txn_id)
        try:
            with pytest.raises((ProducerFenced, KafkaError)):
                await first.commit_transaction()
            async with second.transaction():
                await second.send(tp.topic, b"x", b"successor", partition=tp.partition)
        finally:
            await second.stop()
    finally:
        await first.stop()

    keys = await _committed_keys(settings, start)
    assert keys == [b"committed", b"successor"]
