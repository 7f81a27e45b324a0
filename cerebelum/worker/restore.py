"""Restore: read cerebelum.state partitions to their end and rebuild the live executions.

The state topic is compacted and keyed by execution id, so its last record per key is the
execution's latest snapshot. Snapshots and the input offsets are committed in one transaction,
so the restored states match exactly the point the group's committed offset resumes from.

Restore does not decode snapshots. Each state record carries a header with what recovery needs
(is the execution finished, does it have a step in flight, its pending timers); the snapshot
stays as the record's bytes until an input for that execution arrives. A million parked
executions then cost their bytes and a timer-heap entry each, and restore runs at the speed
the records arrive.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from cerebelum.constants import HEADER_STATE_RECOVERY, TOPIC_STATE
from cerebelum.core.state import Execution

log = logging.getLogger(__name__)

# Large fetches: restore reads whole partitions, and fewer round trips is what makes it fast.
FETCH_MAX_BYTES = 64 * 1024 * 1024
MAX_PARTITION_FETCH_BYTES = 16 * 1024 * 1024

# The recovery header: a flag byte, then one "fire_at timer_id" line per pending timer.
FINISHED = b"F"  # terminal: kept only to recognise a repeated start
RUNNING = b"R"  # a step was in flight: decode and re-dispatch it at once
PARKED = b"P"  # sleeping or waiting: nothing to do until a timer or a signal


def recovery_header(ex: Execution) -> bytes:
    if ex.terminal:
        return FINISHED
    flag = RUNNING if ex.running else PARKED
    timers = b"".join(
        b"\n%d %s" % (t["fire_at"], timer_id.encode()) for timer_id, t in ex.timers.items()
    )
    return flag + timers


@dataclass
class RestoredPartition:
    # Execution id -> its snapshot, still encoded (decoded on first use).
    executions: dict[str, Execution | bytes] = field(default_factory=dict)
    # (fire_at, execution id, timer id) of every pending timer.
    timers: list[tuple[int, str, str]] = field(default_factory=list)
    # Executions with a step in flight, to recover (re-dispatch) at once.
    running: list[str] = field(default_factory=list)


async def restore_partitions(bootstrap: str, partitions: list[int]) -> dict[int, RestoredPartition]:
    """Every partition's executions, timers and in-flight executions."""
    headers_of: dict[int, dict[str, bytes | None]] = {p: {} for p in partitions}
    states: dict[int, dict[str, bytes]] = {p: {} for p in partitions}
    if not partitions:
        return {}
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
    records = 0
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
        while remaining:
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            for tp, msgs in batch.items():
                table = states[tp.partition]
                recovery = headers_of[tp.partition]
                for m in msgs:
                    records += 1
                    key = m.key.decode()
                    if m.value is None:  # a tombstone
                        table.pop(key, None)
                        recovery.pop(key, None)
                        continue
                    table[key] = m.value
                    recovery[key] = _recovery_of(m.headers)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
    finally:
        await consumer.stop()
    restored = {p: _index(states[p], headers_of[p]) for p in partitions}
    log.info(
        "restored %d partitions: %d executions (%d in flight, %d timers) from %d records "
        "in %.2fs",
        len(partitions),
        sum(len(r.executions) for r in restored.values()),
        sum(len(r.running) for r in restored.values()),
        sum(len(r.timers) for r in restored.values()),
        records,
        time.monotonic() - started,
    )
    return restored


def _recovery_of(headers: object) -> bytes | None:
    for name, value in headers or ():  # type: ignore[attr-defined]
        if name == HEADER_STATE_RECOVERY:
            return bytes(value)
    return None  # written before the header existed: decoded once, below


def _index(table: dict[str, bytes], recovery: dict[str, bytes | None]) -> RestoredPartition:
    out = RestoredPartition(executions=dict(table))
    for eid, maybe_header in recovery.items():
        header = maybe_header or recovery_header(Execution.from_record(orjson.loads(table[eid])))
        flag = header[:1]
        if flag == RUNNING:
            out.running.append(eid)
        if flag != FINISHED and len(header) > 1:
            for line in header[2:].split(b"\n"):
                fire_at, timer_id = line.split(b" ", 1)
                out.timers.append((int(fire_at), eid, timer_id.decode()))
    return out
