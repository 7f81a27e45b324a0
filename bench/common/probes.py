"""Kafka and PostgreSQL seen from outside: reset topics, read offsets, scan events, count rows."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.common.base import WALL_MINUS_MONO, say
from bench.common.procfs import port_of
from cerebelum.admin.topics import apply_topics, load_declarations
from cerebelum.config import Settings
from cerebelum.constants import DEFAULT_NAMES, PARTITIONS


def events_tps() -> list[TopicPartition]:
    return [TopicPartition(DEFAULT_NAMES.events, p) for p in range(PARTITIONS)]


async def reset_topics(s: Settings) -> None:
    """Delete and recreate Cerebelum's topics, so a run starts from empty logs and state.

    Committed offsets of deleted topics go with them; transactional ids stay (harmless: the
    next owner's init_transactions bumps their epoch as always).
    """
    from cerebelum.dev.kafka import DEFAULT_PORT

    if port_of(s.kafka_bootstrap) == DEFAULT_PORT and not os.environ.get("BENCH_ALLOW_RESET"):
        raise SystemExit(
            f"refusing to delete the topics of {s.kafka_bootstrap}, the shared development broker "
            "(tests may be using it). Point CEREBELUM_KAFKA at a broker of your own "
            "(bench/README.md), "
            "pass --no-reset, or set BENCH_ALLOW_RESET=1."
        )
    specs = load_declarations()
    names = [spec.name for spec in specs]
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            await admin.delete_topics(doomed)
        deadline = time.monotonic() + 60
        while set(await admin.list_topics()) & set(doomed):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {doomed} still listed 60 s after deletion")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    deadline = time.monotonic() + 60
    while True:  # the broker may still be removing the old logs: retry creation for a while
        try:
            await apply_topics(s.kafka_bootstrap, specs)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)
    await _wait_for_leaders(s, names)


async def _wait_for_leaders(s: Settings, names: list[str], timeout: float = 60.0) -> None:
    """Until every partition of `names` has a leader in sync (new topics take a moment)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            described = await admin.describe_topics(names)
            ready = all(
                t.get("error_code", 0) == 0
                and t["partitions"]
                and all(p["leader"] >= 0 and p["isr"] for p in t["partitions"])
                for t in described
            )
            if ready:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {names} have partitions without a leader")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def prepare(s: Settings) -> None:
    """Create missing topics and apply pending migrations (the schema moves with the code)."""
    from cerebelum.db.migrate import migrate

    await apply_topics(s.kafka_bootstrap, load_declarations())
    for name in await migrate(s.database_url):
        say(f"applied migration {name}")


async def end_offsets(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """Last stable offsets (the consumer reads read_committed): what readers can see."""
    return await consumer.end_offsets(tps)


def offsets_consumer(s: Settings, **kw: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        **kw,
    )


async def group_committed(s: Settings, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}


class GroupOffsets:
    """A long-lived admin client polling one group's committed offsets (cheap enough for 20 Hz)."""

    def __init__(self, s: Settings, group: str, topic: str) -> None:
        self.admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
        self.group = group
        self.topic = topic
        self._coordinator: int | None = None

    async def __aenter__(self) -> GroupOffsets:
        await self.admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.admin.close()

    async def committed(self) -> dict[int, int]:
        if self._coordinator is None:
            self._coordinator = await self.admin.find_coordinator(self.group)
        offsets = await self.admin.list_consumer_group_offsets(self.group, self._coordinator)
        return {
            tp.partition: om.offset
            for tp, om in offsets.items()
            if tp.topic == self.topic and om.offset >= 0
        }


@dataclass
class EventScan:
    """What a pass over the events topic found between two sets of offsets."""

    records: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    completed: int = 0
    failed: int = 0
    last_completed_ts: float | None = None  # record timestamp (worker's clock), monotonic timeline
    first_ts: float | None = None
    last_data_offset: dict[int, int] = field(
        default_factory=dict
    )  # partition -> last record offset
    outputs_checked: int = 0
    wrong_outputs: int = 0


async def scan_events(
    s: Settings,
    start: dict[int, int],
    check: Callable[[dict[str, Any]], bool] | None = None,
    count_types: bool = False,
) -> EventScan:
    """Read cerebelum.events from `start` to its current end (read_committed).

    Counts ExecutionCompleted/ExecutionFailed (a cheap byte test, the rest is not decoded unless
    `count_types` or `check`, which is given every decoded ExecutionCompleted event).
    """
    scan = EventScan()
    consumer = offsets_consumer(
        s, fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024
    )
    await consumer.start()
    try:
        tps = events_tps()
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        remaining = set()
        for tp in tps:
            begin = start.get(tp.partition, 0)
            if ends[tp] > begin:
                consumer.seek(tp, begin)
                remaining.add(tp)
            else:
                consumer.pause(tp)
        types: dict[str, int] = {}
        while remaining:
            batch = await consumer.getmany(timeout_ms=500, max_records=100_000)
            for tp, records in batch.items():
                if records:
                    scan.last_data_offset[tp.partition] = records[-1].offset
                for r in records:
                    scan.records += 1
                    ts = r.timestamp / 1000 - WALL_MINUS_MONO
                    if scan.first_ts is None or ts < scan.first_ts:
                        scan.first_ts = ts
                    value = r.value
                    if count_types:
                        kind = orjson.loads(value)["type"]
                        types[kind] = types.get(kind, 0) + 1
                    if b'"ExecutionCompleted"' in value:
                        scan.completed += 1
                        if scan.last_completed_ts is None or ts > scan.last_completed_ts:
                            scan.last_completed_ts = ts
                        if check is not None:
                            scan.outputs_checked += 1
                            if not check(orjson.loads(value)):
                                scan.wrong_outputs += 1
                    elif b'"ExecutionFailed"' in value:
                        scan.failed += 1
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
        scan.by_type = types
    finally:
        await consumer.stop()
    return scan


async def topic_end(s: Settings, topic: str) -> dict[int, int]:
    consumer = offsets_consumer(s)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
    finally:
        await consumer.stop()
    return {tp.partition: o for tp, o in ends.items()}


async def worker_lag(s: Settings) -> int:
    """Start-commands not yet decided and committed by the worker group."""
    ends = await topic_end(s, DEFAULT_NAMES.commands)
    committed = await group_committed(s, DEFAULT_NAMES.worker_group, DEFAULT_NAMES.commands)
    return sum(max(0, end - committed.get(p, 0)) for p, end in ends.items())


# -- PostgreSQL ----------------------------------------------------------------------------------


async def pg_connect(s: Settings) -> tuple[asyncpg.Connection, int]:
    """A connection for probes, and its backend's pid (excluded from PostgreSQL's CPU)."""
    conn = await asyncpg.connect(s.database_url)
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    return conn, int(pid)


async def truncate_tables(s: Settings) -> None:
    conn = await asyncpg.connect(s.database_url)
    try:
        await conn.execute("TRUNCATE events, executions")
    finally:
        await conn.close()


async def count_completed(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM executions WHERE status = 'completed'"))
