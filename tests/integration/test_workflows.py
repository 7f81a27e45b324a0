"""Workers' registries on cerebelum.workflows: published, withdrawn, followed by readers.

Published from the test (as a worker will on start), against the real broker.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cerebelum.admin.workflows import WorkflowDirectory, publish_workflows, withdraw_workflows
from cerebelum.config import Settings
from cerebelum.core.workflow import Registry, Workflow, step
from cerebelum.errors import KafkaUnavailable
from tests.fakebroker import fake_broker
from tests.helpers import wait_for_workers, worker_member

pytestmark = pytest.mark.integration


@step
def only(inputs: dict) -> dict:
    return inputs


def registry(*names: str) -> Registry:
    workflows = []
    for name in names:
        workflows += [Workflow(name, [only], version="v1"), Workflow(name, [only], version="v2")]
    return Registry(workflows)


async def last_record(settings: Settings, key: str) -> tuple[bool, dict | None]:
    """(found, value) of the last record keyed `key` on cerebelum.workflows."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    found, value = False, None
    try:
        metadata = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(settings.names.workflows, p)
               for p in metadata.partitions_for_topic(settings.names.workflows)]  # fmt: skip
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    if r.key == key.encode():
                        found, value = True, None if r.value is None else orjson.loads(r.value)
    finally:
        await consumer.stop()
    return found, value


async def test_publish_and_withdraw(settings: Settings, topics: None, unique) -> None:
    worker_id = unique("host:1234")
    before = int(time.time() * 1000)
    await publish_workflows(settings, worker_id, registry("alpha", "beta"))
    found, value = await last_record(settings, worker_id)
    assert found and value is not None
    assert value["worker_id"] == worker_id
    assert before <= value["at"] <= int(time.time() * 1000)
    assert [sorted(w.pop("graphs")) for w in value["workflows"]] == [["v1", "v2"], ["v1", "v2"]]
    assert value["workflows"] == [
        {"name": "alpha", "versions": ["v2", "v1"]},  # newest (the last registered) first
        {"name": "beta", "versions": ["v2", "v1"]},
    ]

    await withdraw_workflows(settings, worker_id)
    assert await last_record(settings, worker_id) == (True, None)  # a tombstone


async def test_the_directory_follows_and_counts_only_live_workers(
    settings: Settings, topics: None, unique
) -> None:
    live, gone = unique("live"), unique("gone")
    await publish_workflows(settings, gone, registry("from-a-dead-worker"))
    directory = WorkflowDirectory(settings)
    task = asyncio.ensure_future(directory.run())
    try:
        async with asyncio.timeout(15):
            await directory.caught_up.wait()
        assert "from-a-dead-worker" in directory.published(gone).names

        await publish_workflows(settings, live, registry("alpha"))
        async with worker_member(settings, live):
            await wait_for_workers(settings, {settings.names.worker_client_id(live)})
            async with asyncio.timeout(5):
                while directory.published(live) is None:
                    await asyncio.sleep(0.05)
            view = await directory.live_workflows()
            assert view.live_workers == (live,)
            assert view.unpublished == ()
            assert view.workflows == {"alpha": ("v2", "v1")}  # not the dead worker's

            await withdraw_workflows(settings, live)
            async with asyncio.timeout(5):
                while directory.published(live) is not None:
                    await asyncio.sleep(0.05)
            view = await directory.live_workflows()
            assert view.unpublished == (live,) and view.workflows == {}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await directory.close()
        await withdraw_workflows(settings, gone)


async def test_publishing_is_bounded_when_kafka_cannot_take_it(settings: Settings) -> None:
    with fake_broker() as address:
        began = time.monotonic()
        with pytest.raises(KafkaUnavailable):
            await publish_workflows(
                replace(settings, kafka_bootstrap=address), "w", registry("a"), timeout=2
            )
        assert time.monotonic() - began < 10
