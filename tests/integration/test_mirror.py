"""The mirror against the real broker and database: rows, idempotent replay, the version guard."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from cerebelum.client import partition_for
from cerebelum.config import Settings
from cerebelum.constants import PARTITIONS
from cerebelum.core import events as ev
from cerebelum.core.events import error_info, make_event
from cerebelum.db import connect_pool
from cerebelum.mirror import Mirror
from cerebelum.mirror.fold import EventRow, ExecutionRow, decode_event, fold, sort_and_dedupe
from cerebelum.mirror.store import upsert_executions, write_batch

pytestmark = pytest.mark.integration

AT = 1_700_000_000_000


def all_partitions(settings: Settings) -> list[TopicPartition]:
    return [TopicPartition(settings.names.events, p) for p in range(PARTITIONS)]


# --- helpers --------------------------------------------------------------------------------------


def completed_history(execution_id: str) -> list[dict[str, Any]]:
    return [
        make_event(execution_id, 1, ev.EXECUTION_STARTED, AT, workflow="order",
                   workflow_version="v1", inputs={"n": 1}),
        make_event(execution_id, 2, ev.STEP_SCHEDULED, AT + 1, step="a", index=0, attempt=1),
        make_event(execution_id, 3, ev.STEP_COMPLETED, AT + 2, step="a", attempt=1, result=2),
        make_event(execution_id, 4, ev.STEP_SCHEDULED, AT + 3, step="b", index=1, attempt=1),
        make_event(execution_id, 5, ev.STEP_COMPLETED, AT + 4, step="b", attempt=1, result=3),
        make_event(execution_id, 6, ev.EXECUTION_COMPLETED, AT + 5, output={"sum": 5}),
    ]  # fmt: skip


def failed_history(execution_id: str) -> list[dict[str, Any]]:
    return [
        *completed_history(execution_id)[:4],
        make_event(execution_id, 5, ev.STEP_FAILED, AT + 4, step="b", attempt=1,
                   error=error_info("ValueError", "boom")),
        make_event(execution_id, 6, ev.EXECUTION_FAILED, AT + 5,
                   error=error_info("ValueError", "boom", "b")),
    ]  # fmt: skip


def rows_of(events: list[dict[str, Any]], partition: int = 0) -> list[EventRow]:
    return sort_and_dedupe(
        decode_event(orjson.dumps(e), partition, offset) for offset, e in enumerate(events)
    )


async def end_offsets(settings: Settings) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(all_partitions(settings)))
    finally:
        await consumer.stop()


async def set_group_offsets(
    settings: Settings, group: str, offsets: dict[TopicPartition, int]
) -> None:
    """Point a new consumer group at `offsets`, so a mirror in it reads only what follows."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def committed_offset(settings: Settings, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


async def produce(settings: Settings, records: list[tuple[str, bytes]]) -> None:
    """Plain (non-transactional) produce, each record keyed like the workers key events."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(settings.names.events, value, key.encode())
            for key, value in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def run_mirror_until(
    mirror: Mirror, done: Callable[[], Awaitable[bool]], timeout: float = 8.0
) -> None:
    """Run the mirror until `done()` holds (checked every 100 ms), then stop it."""
    await mirror.start()
    task = asyncio.get_running_loop().create_task(mirror.run())
    try:
        async with asyncio.timeout(timeout):
            while not await done():
                assert not task.done(), task.exception()
                await asyncio.sleep(0.1)
    finally:
        await mirror.stop()
        await task


async def caught_up(mirror: Mirror) -> bool:
    """True once the mirror owns partitions and everything before their ends is in PostgreSQL."""
    consumer = mirror._consumer
    return consumer is not None and bool(consumer.assignment()) and await mirror.lag() == 0


EVENTS_OF = (
    "SELECT * FROM events WHERE execution_id = ANY($1::text[]) ORDER BY execution_id, version"
)
EXECUTIONS_OF = (
    "SELECT * FROM executions WHERE execution_id = ANY($1::text[]) ORDER BY execution_id"
)


@pytest.fixture
async def pool(settings: Settings, database: None) -> AsyncIterator[asyncpg.Pool]:
    p = await connect_pool(settings.namespace_database_url, min_size=1, max_size=2)
    yield p
    await p.close()


def new_ids(n: int) -> list[str]:
    run = uuid.uuid4().hex[:10]
    return [f"mirror-{run}-{i}" for i in range(n)]


# --- Kafka → PostgreSQL ---------------------------------------------------------------------------


async def test_mirror_writes_rows_and_a_replay_changes_nothing(
    settings: Settings, topics: None, database: None, pool: asyncpg.Pool
) -> None:
    done_id, failed_id, running_id = new_ids(3)
    histories = {
        done_id: completed_history(done_id),
        failed_id: failed_history(failed_id),
        running_id: completed_history(running_id)[:3],
    }
    records = [(eid, orjson.dumps(e)) for eid, h in histories.items() for e in h]
    # Garbage on the same partition as live events: skipped, and the partition moves on.
    records.insert(2, (done_id, b"not json at all"))
    records.insert(5, (done_id, orjson.dumps({"execution_id": done_id, "type": "X"})))
    start = await end_offsets(settings)
    await produce(settings, records)

    group = f"test-mirror-{uuid.uuid4().hex[:8]}"
    await set_group_offsets(settings, group, start)
    ids = list(histories)

    async def all_written() -> bool:
        rows = await pool.fetch(
            "SELECT execution_id, last_version FROM executions "
            "WHERE execution_id = ANY($1::text[])",
            ids,
        )
        return {r["execution_id"]: r["last_version"] for r in rows} == {
            done_id: 6, failed_id: 6, running_id: 3
        }  # fmt: skip

    mirror = Mirror(settings, group_id=group)
    await run_mirror_until(mirror, all_written)
    assert mirror.stats.malformed >= 2

    events = await pool.fetch(EVENTS_OF, ids)
    executions = {r["execution_id"]: dict(r) for r in await pool.fetch(EXECUTIONS_OF, ids)}

    # events: every version once, the event as produced, its Kafka coordinates.
    assert len(events) == 15
    by_id: dict[str, list[asyncpg.Record]] = {}
    for r in events:
        by_id.setdefault(r["execution_id"], []).append(r)
    for eid, history in histories.items():
        stored = by_id[eid]
        assert [r["version"] for r in stored] == list(range(1, len(history) + 1))
        assert [r["data"] for r in stored] == history
        assert [r["type"] for r in stored] == [e["type"] for e in history]
        assert {r["kafka_partition"] for r in stored} == {partition_for(eid)}
        assert stored[0]["at"] == datetime.fromtimestamp(AT / 1000, UTC)

    done = executions[done_id]
    assert done["status"] == "completed"
    assert (done["workflow"], done["workflow_version"]) == ("order", "v1")
    assert done["inputs"] == {"n": 1} and done["output"] == {"sum": 5} and done["error"] is None
    assert done["current_step"] == "b"
    assert done["started_at"] == datetime.fromtimestamp(AT / 1000, UTC)
    assert done["finished_at"] == done["updated_at"] == datetime.fromtimestamp((AT + 5) / 1000, UTC)
    failed = executions[failed_id]
    assert failed["status"] == "failed"
    assert failed["error"] == {"type": "ValueError", "message": "boom", "step": "b"}
    running = executions[running_id]
    assert running["status"] == "running" and running["finished_at"] is None
    assert running["output"] is None and running["inputs"] == {"n": 1}

    # Offsets were committed after the write: the group resumes after our records.
    tp = TopicPartition(settings.names.events, partition_for(done_id))
    committed = await committed_offset(settings, group, tp)
    assert committed is not None and committed >= start[tp] + len(histories[done_id]) + 2

    # Replay the same records in a new group: nothing changes.
    replay = f"test-mirror-replay-{uuid.uuid4().hex[:8]}"
    await set_group_offsets(settings, replay, start)
    again = Mirror(settings, group_id=replay)
    await run_mirror_until(again, lambda: caught_up(again))
    assert again.stats.events_seen >= 15
    assert [dict(r) for r in await pool.fetch(EVENTS_OF, ids)] == [dict(r) for r in events]
    assert {r["execution_id"]: dict(r) for r in await pool.fetch(EXECUTIONS_OF, ids)} == executions


async def test_two_mirrors_in_one_group_share_the_work_across_a_rebalance(
    settings: Settings, topics: None, database: None, pool: asyncpg.Pool
) -> None:
    ids = new_ids(40)
    start = await end_offsets(settings)
    group = f"test-mirror-pair-{uuid.uuid4().hex[:8]}"
    await set_group_offsets(settings, group, start)
    first, second = Mirror(settings, group_id=group), Mirror(settings, group_id=group)
    await first.start()
    tasks = [asyncio.get_running_loop().create_task(first.run())]
    try:
        await produce(
            settings, [(i, orjson.dumps(e)) for i in ids[:20] for e in completed_history(i)]
        )
        await second.start()  # joins: the group rebalances while the first may be writing
        tasks.append(asyncio.get_running_loop().create_task(second.run()))
        await produce(
            settings, [(i, orjson.dumps(e)) for i in ids[20:] for e in completed_history(i)]
        )
        async with asyncio.timeout(8):
            while True:
                done = await pool.fetchval(
                    "SELECT count(*) FROM executions "
                    "WHERE execution_id = ANY($1::text[]) AND last_version = 6",
                    ids,
                )
                if done == len(ids):
                    break
                await asyncio.sleep(0.1)
        async with asyncio.timeout(8):
            while not (
                first._consumer
                and second._consumer
                and first._consumer.assignment()
                and second._consumer.assignment()
            ):
                await asyncio.sleep(0.1)  # both own partitions once the rebalance settles
    finally:
        await asyncio.gather(first.stop(), second.stop())
        await asyncio.gather(*tasks)
    assert await pool.fetchval(
        "SELECT count(*) FROM events WHERE execution_id = ANY($1::text[])", ids
    ) == 6 * len(ids)


async def test_offsets_are_not_committed_while_the_database_refuses_the_batch(
    settings: Settings, topics: None, database: None
) -> None:
    (eid,) = new_ids(1)
    tp = TopicPartition(settings.names.events, partition_for(eid))
    start = await end_offsets(settings)
    await produce(settings, [(eid, orjson.dumps(e)) for e in completed_history(eid)[:2]])
    group = f"test-mirror-nodb-{uuid.uuid4().hex[:8]}"
    await set_group_offsets(settings, group, start)

    # A database without the schema: every write fails, so nothing may be committed.
    admin = await asyncpg.connect(settings.database_url)
    name = f"cerebelum_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = urlunsplit(urlsplit(settings.database_url)._replace(path=f"/{name}"))
        empty = await connect_pool(url, min_size=1, max_size=2)
        mirror = Mirror(settings, group_id=group, pool=empty)

        async def retrying() -> bool:
            return mirror.stats.db_retries >= 2

        await run_mirror_until(mirror, retrying)
        await empty.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    assert mirror.stats.batches == 0
    assert await committed_offset(settings, group, tp) == start[tp]


# --- the SQL guard, straight ----------------------------------------------------------------------


async def test_an_older_batch_never_moves_a_row_backwards(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    (eid,) = new_ids(1)
    rows = rows_of(completed_history(eid))
    async with pool.acquire() as conn:
        assert await write_batch(conn, rows, settings.names.mirrored_channel) == 6
        after = dict(await conn.fetchrow("SELECT * FROM executions WHERE execution_id = $1", eid))

        # The first three events again, as a late batch from a replay or a slow mirror.
        assert await write_batch(conn, rows[:3], settings.names.mirrored_channel) == 0
        # A hand-made older row, and one at the same version: both ignored.
        for version in (3, 6):
            stale = ExecutionRow(eid, last_version=version, updated_at=AT + 99, status="running",
                                 current_step="zzz", error='{"stale": true}')  # fmt: skip
            await upsert_executions(conn, [stale])
        row = dict(await conn.fetchrow("SELECT * FROM executions WHERE execution_id = $1", eid))
    assert row == after
    assert row["status"] == "completed" and row["last_version"] == 6


async def test_a_newer_batch_keeps_what_earlier_batches_set(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    first, second = new_ids(2)
    async with pool.acquire() as conn:
        history = completed_history(first)
        await write_batch(conn, rows_of(history[:2]), settings.names.mirrored_channel)
        await write_batch(conn, rows_of(history[2:4]), settings.names.mirrored_channel)
        await write_batch(conn, rows_of(history[4:]), settings.names.mirrored_channel)
        await write_batch(conn, rows_of(completed_history(second)), settings.names.mirrored_channel)
        columns = "workflow, workflow_version, status, current_step, inputs, output, error, " \
                  "started_at, updated_at, finished_at, last_version"  # fmt: skip
        in_batches = await conn.fetchrow(
            f"SELECT {columns} FROM executions WHERE execution_id = $1", first
        )
        at_once = await conn.fetchrow(
            f"SELECT {columns} FROM executions WHERE execution_id = $1", second
        )
    assert dict(in_batches) == dict(at_once)
    assert (in_batches["workflow"], in_batches["status"]) == ("order", "completed")


async def test_a_batch_of_many_executions_folds_to_one_row_each(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    ids = new_ids(50)
    rows = sort_and_dedupe(
        decode_event(orjson.dumps(e), 0, i)
        for i, e in enumerate(e for eid in reversed(ids) for e in completed_history(eid))
    )
    assert len(fold(rows)) == 50
    async with pool.acquire() as conn:
        assert await write_batch(conn, rows, settings.names.mirrored_channel) == 300
        statuses = await conn.fetch(
            "SELECT status, count(*) FROM executions "
            "WHERE execution_id = ANY($1::text[]) GROUP BY 1",
            ids,
        )
    assert [(r["status"], r["count"]) for r in statuses] == [("completed", 50)]


async def test_an_event_postgres_refuses_is_skipped_alone(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    (eid,) = new_ids(1)
    rows = rows_of(completed_history(eid))
    # Valid to the decoder, refused by PostgreSQL (we forge the text the decoder would keep).
    # mirror_rejects is keyed by Kafka coordinates: forged ones must not repeat between runs.
    rows[3] = rows[3]._replace(data="{broken", kafka_offset=uuid.uuid4().int % 2**62)
    mirror = Mirror(settings, pool=pool)
    await mirror._write(rows)
    assert mirror.stats.rejected == 1
    versions = await pool.fetch(
        "SELECT version FROM events WHERE execution_id = $1 ORDER BY version", eid
    )
    assert [r["version"] for r in versions] == [1, 2, 3, 5, 6]
    reject = await pool.fetchrow("SELECT * FROM mirror_rejects WHERE execution_id = $1", eid)
    assert (reject["version"], reject["sqlstate"], reject["event"]) == (4, "22P02", "{broken")
    assert (
        await pool.fetchval("SELECT status FROM executions WHERE execution_id = $1", eid)
        == "completed"
    )


async def test_a_completion_clears_a_stale_error_and_a_cancellation_has_the_core_shape(
    settings: Settings,
    pool: asyncpg.Pool,
) -> None:
    retried, cancelled = new_ids(2)
    history = completed_history(retried)
    failed_attempt = make_event(retried, 5, ev.STEP_FAILED, AT + 4, step="b", attempt=1,
                                error=error_info("ValueError", "flaky"))  # fmt: skip
    retry = [
        make_event(retried, 6, ev.STEP_SCHEDULED, AT + 5, step="b", index=1, attempt=2),
        make_event(retried, 7, ev.STEP_COMPLETED, AT + 6, step="b", attempt=2, result=3),
        make_event(retried, 8, ev.EXECUTION_COMPLETED, AT + 7, output={"sum": 5}),
    ]
    stopped = [
        *completed_history(cancelled)[:2],
        make_event(cancelled, 3, ev.EXECUTION_CANCELLED, AT + 3, reason="customer left"),
    ]
    async with pool.acquire() as conn:
        # The failed attempt and the completion in separate batches, as a live mirror sees them.
        await write_batch(
            conn, rows_of([*history[:4], failed_attempt]), settings.names.mirrored_channel
        )
        query = "SELECT error FROM executions WHERE execution_id = $1"
        stored = await conn.fetchval(query, retried)
        assert stored == {"type": "ValueError", "message": "flaky"}
        await write_batch(conn, rows_of(retry), settings.names.mirrored_channel)
        await write_batch(conn, rows_of(stopped), settings.names.mirrored_channel)
        rows = {
            r["execution_id"]: dict(r)
            for r in await conn.fetch(EXECUTIONS_OF, [retried, cancelled])
        }
    assert rows[retried]["status"] == "completed" and rows[retried]["error"] is None
    assert rows[cancelled]["status"] == "cancelled"
    assert rows[cancelled]["error"] == ev.cancelled_error("customer left")
