"""Restore: read cerebelum.state partitions to their end and rebuild the live executions.

The state topic is compacted and keyed by execution id, so its last record per key is the
execution's latest snapshot. Snapshots and the input offsets are committed in one transaction,
so the restored states match exactly the point the group's committed offset resumes from.
"""

from __future__ import annotations

import logging
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from cerebelum.constants import TOPIC_STATE
from cerebelum.core.state import Execution

log = logging.getLogger(__name__)

# Large fetches: restore reads whole partitions, and fewer round trips is what makes it fast.
FETCH_MAX_BYTES = 64 * 1024 * 1024
MAX_PARTITION_FETCH_BYTES = 16 * 1024 * 1024


async def restore_partitions(
    bootstrap: str, partitions: list[int]
) -> dict[int, dict[str, Execution]]:
    """Every partition's executions, keyed by execution id."""
    states: dict[int, dict[str, Execution]] = {p: {} for p in partitions}
    if not partitions:
        return states
    started = time.monotonic()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_bytes=FETCH_MAX_BYTES,
        max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(TOPIC_STATE, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # With read_committed, end_offsets is the last stable offset: everything committed.
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        for tp in tps:
            if tp not in remaining:
                consumer.pause(tp)
        records = 0
        while remaining:
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            for tp, msgs in batch.items():
                table = states[tp.partition]
                for m in msgs:
                    records += 1
                    if m.value is None:
                        table.pop(m.key.decode(), None)
                    else:
                        ex = Execution.from_record(orjson.loads(m.value))
                        table[ex.id] = ex
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
        log.info(
            "restored %d partitions: %d executions from %d records in %.2fs",
            len(partitions),
            sum(len(t) for t in states.values()),
            records,
            time.monotonic() - started,
        )
    finally:
        await consumer.stop()
    return states
