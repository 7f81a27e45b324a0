"""Mirror cerebelum.dlq into the `dead_letters` table (migration 007), beside the events.

The dead-letter topic is small (a record per refused command), so this is the plain loop: its
own consumer in its own group (the mirror group's name and `-dlq`: `cerebelum-mirror-dlq` in the
default namespace; read_committed), fetch, insert what is new
(a re-read changes nothing; a different record at a known position, after the topic was made
again, replaces the stale row), then commit the offsets. PostgreSQL or
Kafka away: wait and try again with backoff; nothing is committed before it is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError

from cerebelum.backoff import Backoff, sleep_unless_stopping
from cerebelum.config import Settings
from cerebelum.constants import (
    HEADER_DLQ_EXECUTION_ID,
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE_OFFSET,
    HEADER_DLQ_SOURCE_PARTITION,
    HEADER_DLQ_SOURCE_TOPIC,
)
from cerebelum.security.kafka import aiokafka_kwargs

log = logging.getLogger(__name__)

FETCH_TIMEOUT_MS = 1_000
FETCH_WAIT_MS = 2_000
MAX_RECORDS = 1_000

INSERT_DEAD_LETTERS = """
INSERT INTO dead_letters (kafka_partition, kafka_offset, at, reason, execution_id, source_topic,
                          source_partition, source_offset, key, value)
SELECT * FROM unnest($1::int[], $2::bigint[], $3::timestamptz[], $4::text[], $5::text[],
                     $6::text[], $7::int[], $8::bigint[], $9::bytea[], $10::bytea[])
ON CONFLICT (kafka_partition, kafka_offset) DO UPDATE
    SET at = EXCLUDED.at, reason = EXCLUDED.reason, execution_id = EXCLUDED.execution_id,
        source_topic = EXCLUDED.source_topic, source_partition = EXCLUDED.source_partition,
        source_offset = EXCLUDED.source_offset, key = EXCLUDED.key, value = EXCLUDED.value,
        replayed_at = NULL, replayed_by = NULL
    -- The same record read again changes nothing. Another record at the same position means
    -- the topic was deleted and made again (offsets start over): the old row's record is gone.
    WHERE dead_letters.at <> EXCLUDED.at OR dead_letters.value <> EXCLUDED.value
"""


def row_of(record: ConsumerRecord[bytes, bytes]) -> tuple[Any, ...]:
    headers = {k: v for k, v in (record.headers or ())}

    def text(name: str) -> str | None:
        value = headers.get(name)
        return None if value is None else value.decode("utf-8", "replace")

    def number(name: str) -> int | None:
        value = text(name)
        return int(value) if value is not None and value.isdigit() else None

    return (
        record.partition,
        record.offset,
        datetime.fromtimestamp(record.timestamp / 1000, UTC),
        text(HEADER_DLQ_REASON) or "(no reason recorded)",
        text(HEADER_DLQ_EXECUTION_ID),
        text(HEADER_DLQ_SOURCE_TOPIC),
        number(HEADER_DLQ_SOURCE_PARTITION),
        number(HEADER_DLQ_SOURCE_OFFSET),
        record.key,
        record.value or b"",
    )


async def write(pool: asyncpg.Pool, rows: Sequence[tuple[Any, ...]], channel: str) -> None:
    """Write the rows; tell the API's readers when they commit (a refused start is the fate a
    reader waiting for that execution gets, cerebelum.api.visibility)."""
    columns = [list(column) for column in zip(*rows, strict=True)]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(INSERT_DEAD_LETTERS, *columns)
        await conn.execute(f"NOTIFY {channel}")


class DeadLetterMirror:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, stopping: asyncio.Event) -> None:
        self.settings = settings
        self.pool = pool
        self.stopping = stopping
        self.written = 0

    async def run(self) -> None:
        """Mirror until `stopping` is set; every failure is waited out, never raised."""
        backoff = Backoff()
        while not self.stopping.is_set():
            consumer = AIOKafkaConsumer(
                self.settings.names.dlq,
                **aiokafka_kwargs(self.settings),
                # The mirror group's name and "-dlq": a group of its own.
                group_id=f"{self.settings.names.mirror_group}-dlq",
                isolation_level="read_committed",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # Dead letters are rare: an idle follower sends one fetch every 2 s, not two a
                # second (as the events' mirror, cerebelum.mirror.mirror.FETCH_WAIT_MS).
                fetch_max_wait_ms=FETCH_WAIT_MS,
                consumer_timeout_ms=FETCH_WAIT_MS,  # as the events' mirror's (see there)
            )
            try:
                await consumer.start()
                backoff.reset()
                await self._follow(consumer, backoff)
            except (KafkaError, OSError) as exc:
                delay = backoff.next_delay()
                log.warning("mirror: dead letters: Kafka: %r; again in %.1f s", exc, delay)
                await sleep_unless_stopping(delay, self.stopping)
            finally:
                await consumer.stop()

    async def _follow(self, consumer: AIOKafkaConsumer, backoff: Backoff) -> None:
        while not self.stopping.is_set():
            fetched = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=MAX_RECORDS)
            records = [r for batch in fetched.values() for r in batch]
            if not records:
                continue
            while not self.stopping.is_set():
                try:
                    rows = [row_of(r) for r in records]
                    await write(self.pool, rows, self.settings.names.mirrored_channel)
                    backoff.reset()
                    break
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    delay = backoff.next_delay()
                    log.warning("mirror: dead letters: PostgreSQL: %r; again in %.1f s", exc,
                                delay)  # fmt: skip
                    await sleep_unless_stopping(delay, self.stopping)
            else:
                return  # stopping before the write: the offsets stay, the records are re-read
            offsets = {tp: batch[-1].offset + 1 for tp, batch in fetched.items() if batch}
            await consumer.commit(offsets)
            self.written += len(records)
            log.info("mirror: %d dead letters recorded", len(records))
