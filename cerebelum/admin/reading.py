"""Reading a topic whole, as `cerebelum verify` does: read_committed, to fixed end offsets.

The end offsets are taken before the read (last stable offsets), so a read has a fixed size,
ends even while producers keep writing, and never shows an open or aborted transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from cerebelum.config import Settings
from cerebelum.security.kafka import aiokafka_kwargs

# Progress callback: (topic, offsets covered, offsets to cover); transaction markers take
# offsets too, so offsets, not records, reach the total.
Progress = Callable[[str, int, int], None]
Offsets = dict[int, int]

# Progress is reported this often: alive enough to watch, rare enough to read.
PROGRESS_INTERVAL_S = 2.0
# A read that makes no progress for this long is stuck (broker gone): give up, don't hang.
STALL_TIMEOUT_S = 60.0


async def read_topic(
    settings: Settings,
    topic: str,
    starts: Offsets,
    ends: Offsets,
    handle: Callable[[int, list[ConsumerRecord]], None],
    progress: Progress | None = None,
) -> int:
    """Feed every committed record of `topic` in [starts, ends) to `handle`, partition by
    partition batch; return how many records were read."""
    wanted = {p: (starts.get(p, 0), end) for p, end in ends.items() if starts.get(p, 0) < end}
    total = sum(end - start for start, end in wanted.values())
    if not wanted:
        return 0
    consumer = AIOKafkaConsumer(
        **aiokafka_kwargs(settings),
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # a start retention already deleted: from the first held
    )
    await consumer.start()
    read = 0
    try:
        tps = {p: TopicPartition(topic, p) for p in wanted}
        consumer.assign(list(tps.values()))
        for p, tp in tps.items():
            consumer.seek(tp, wanted[p][0])
        remaining = set(tps.values())
        reported = moved = time.monotonic()
        periodic = False
        positions: dict[TopicPartition, int] = {}
        while remaining:
            # Half a second: long enough to batch, short enough to notice the end promptly;
            # 10k records a turn bounds the decoded records held at once (~10 MB).
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=10_000)
            for tp, records in batches.items():
                end = wanted[tp.partition][1]
                records = [r for r in records if r.offset < end]
                if records:
                    handle(tp.partition, records)
                    read += len(records)
            now = time.monotonic()
            for tp in list(remaining):
                position = await consumer.position(tp)
                if position != positions.get(tp):  # markers and aborted data move it too
                    positions[tp], moved = position, now
                if position >= wanted[tp.partition][1]:
                    remaining.discard(tp)
                    consumer.pause(tp)
            if now - moved > STALL_TIMEOUT_S:
                raise TimeoutError(f"reading {topic}: no progress for {STALL_TIMEOUT_S:.0f} s")
            if progress is not None and now - reported >= PROGRESS_INTERVAL_S:
                done = sum(min(o, wanted[tp.partition][1]) - wanted[tp.partition][0]
                           for tp, o in positions.items())  # fmt: skip
                progress(topic, done, total)
                reported, periodic = now, True
    finally:
        await consumer.stop()
    if progress is not None and periodic:  # a quick read needs no progress, only a long one
        progress(topic, total, total)
    return read


async def start_offsets(
    settings: Settings, topic: str, ends: Offsets, since_ms: int | None
) -> Offsets:
    """Where to start reading (in the partitions of `ends`): the first held offsets, or the
    first at or after `since_ms`."""
    consumer = AIOKafkaConsumer(**aiokafka_kwargs(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(ends)]
        beginning = {tp.partition: o for tp, o in (await consumer.beginning_offsets(tps)).items()}
        if since_ms is None:
            return beginning
        found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        # No record at or after the time: nothing to read there (start at the end).
        return {
            tp.partition: ends.get(tp.partition, 0)
            if at is None
            else max(at.offset, beginning[tp.partition])
            for tp, at in found.items()
        }
    finally:
        await consumer.stop()
