"""The mirror: cerebelum.events → PostgreSQL, idempotently, offsets committed after the data.

    async with Mirror(settings) as mirror:
        await mirror.run()          # until mirror.stop() (another task, a signal handler)

For each batch, in order:
    1. fetch up to MAX_RECORDS committed records (read_committed: aborted writes never show);
    2. decode and validate them; a malformed record is logged, counted and skipped;
    3. sort by (execution_id, version), so concurrent mirrors take row locks in one order;
    4. in ONE transaction, insert the events (ON CONFLICT DO NOTHING) and upsert the folded
       executions rows (guarded by last_version, so nothing goes backwards);
    5. after the commit, commit the batch's Kafka offsets.
A crash between 4 and 5 replays the batch, which changes nothing.

When PostgreSQL fails step 4 (mirror/faults.py tells which failure is which): a transient or
setup failure is retried with backoff, the same batch, until it passes; a refusal of the data
bisects the batch until the events that fail alone are found, sets each aside in the
`mirror_rejects` table (logged once, counted in `MirrorStats.rejected`) and writes the rest.
One bad event never holds up the others.

Starting waits for both services: the pool and the group are retried with backoff, one log
line per attempt, until they answer or `request_stop()` is called.

Pipelining: step 4 of one batch overlaps steps 1 to 3 of the next. With `writers` > 1 the batch is
split by Kafka partition (an execution lives on one partition) and the shards are written on
separate connections at once; each shard's batches still commit in order.

Telemetry (`self.metrics`): MirrorStats read when scraped, a histogram of the database
transactions, and the lag, measured every LAG_REFRESH_S from what the consumer already knows
(the end offsets of its last fetches, no request to the broker): per partition, the events past
the last offset written to PostgreSQL, and, while behind, the age of the last event written
(its Kafka timestamp). `alive()` and `ready()` answer /healthz and /readyz: ready while it
consumes and PostgreSQL answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaConnectionError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from cerebelum.backoff import Backoff, until_ready
from cerebelum.config import Settings
from cerebelum.constants import EVENT_SCHEMA
from cerebelum.db import connect_pool
from cerebelum.mirror.faults import Fault, classify, is_retried, sqlstate
from cerebelum.mirror.fold import EventRow, MalformedEvent, decode_event, sort_and_dedupe
from cerebelum.mirror.store import record_reject, write_batch
from cerebelum.security.kafka import aiokafka_kwargs
from cerebelum.security.probe import refusal
from cerebelum.security.redact import redact
from cerebelum.telemetry.metrics import MirrorMetrics

log = logging.getLogger(__name__)

# Large batches amortise the four round trips of a transaction; 20k events of ~400 B is ~8 MB,
# about a third of a second of PostgreSQL work at the 60k rows/s measured on 2 cores.
MAX_RECORDS = 20_000
# How long one getmany() waits when nothing was fetched: records are handed over as soon as
# they arrive, so this only sets how often an idle mirror wakes up (and checks for a stop).
FETCH_TIMEOUT_MS = 500
# Long polls: the broker answers a fetch as soon as records arrive, so a long wait costs no
# freshness; an idle mirror then sends one fetch every 2 s instead of two a second.
FETCH_WAIT_MS = 2_000
# After a small batch the mirror waits this long before taking the next: under a steady
# trickle it then takes the transactions of the last 0.1 s at once instead of waking for each
# (each wake-up is a read_committed fetch over 64 partitions for the broker, and a PostgreSQL
# transaction). A mirrored event may be this much later; an idle mirror pays nothing for it.
LINGER_S = 0.1
# A batch smaller than this is "small" (a burst's batches go on back to back).
LINGER_BELOW = 1_000
# Throughput and lag go to the log this often: often enough to watch, rarely enough to read.
REPORT_INTERVAL_S = 10.0
# Malformed records are logged one by one up to this many, then only counted.
MAX_LOGGED_MALFORMED = 100
# The lag metric is measured this often: fresh enough to watch, and it costs a look at 64
# partitions' cached end offsets.
LAG_REFRESH_S = 5.0
# /readyz: the loop fetches at least every FETCH_TIMEOUT_MS; one that has not for this long is
# stuck. A write that succeeded this recently proves PostgreSQL reachable without asking it.
STALLED_S = 30.0
DB_RECENT_S = 10.0
# /readyz asks PostgreSQL (SELECT 1) for at most this long when no write proved it reachable.
DB_PROBE_TIMEOUT_S = 1.0


@dataclass(slots=True)
class MirrorStats:
    """Counters since start; `lag` is refreshed at each report."""

    batches: int = 0
    events_seen: int = 0  # valid events fetched (including ones already in the table)
    events_written: int = 0  # events that were new to the table
    malformed: int = 0
    rejected: int = 0  # valid-looking events PostgreSQL refused: set aside in mirror_rejects
    commit_failures: int = 0
    db_retries: int = 0
    newer_schema: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class Shard:
    """The part of one fetched batch one writer takes: rows and the offsets to commit after."""

    rows: list[EventRow]
    offsets: dict[TopicPartition, int]  # next offset to read, per partition
    records: int  # records (valid or not) covered, for the pending count
    # Partition -> the Kafka timestamp (ms) of its last record in the shard (the lag's age).
    times: dict[int, int] = field(default_factory=dict)


class Mirror:
    """Consumes cerebelum.events in the mirror group and keeps `events` and `executions` current.

    `pool` lets a caller share its own asyncpg pool (it is then not closed by `stop()`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str | None = None,  # the namespace's mirror group unless given
        writers: int = 2,  # on 2 cores: 1 writer ~36k events/s, 2 ~55-60k, 3 or 4 no more
        pool: asyncpg.Pool | None = None,
        max_records: int = MAX_RECORDS,
        fetch_timeout_ms: int = FETCH_TIMEOUT_MS,
        report_interval_s: float = REPORT_INTERVAL_S,
    ) -> None:
        if writers < 1:
            raise ValueError("writers must be at least 1")
        self.settings = settings
        self.names = settings.names
        self.group_id = group_id or self.names.mirror_group
        self.writers = writers
        self.max_records = max_records
        self.fetch_timeout_ms = fetch_timeout_ms
        self.report_interval_s = report_interval_s
        self.stats = MirrorStats()
        self._pool = pool
        self._owns_pool = pool is None
        self._consumer: AIOKafkaConsumer | None = None
        self._inflight: list[asyncio.Task[None] | None] = [None] * writers
        self._pending = 0  # records fetched whose batch is not yet committed to PostgreSQL
        self._stopping = asyncio.Event()
        self._run_done: asyncio.Event | None = None
        self.metrics = MirrorMetrics(lambda: self.stats)
        # Partition -> (next offset, Kafka timestamp in ms of the last record) written to
        # PostgreSQL, for partitions owned now.
        self._written: dict[int, tuple[int, int]] = {}
        self._fetched: dict[int, int] = {}  # partition -> next offset handed to a writer
        self._last_fetch = 0.0  # monotonic time of the last getmany() that returned
        self._last_write = 0.0  # monotonic time of the last batch PostgreSQL took

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def pool(self) -> asyncpg.Pool | None:
        """The pool once `start()` opened (or was given) it."""
        return self._pool

    @property
    def stopping(self) -> asyncio.Event:
        """Set once a stop is requested: what a caller waiting on a service should watch too."""
        return self._stopping

    async def start(self) -> None:
        """Open the pool (unless given one) and join the consumer group, each retried with
        backoff until it answers. Returns early, `run()` then returning at once, if a stop is
        requested while it waits."""
        if self._pool is None:
            self._pool = await until_ready(
                f"mirror: PostgreSQL at {_where(self.settings.namespace_database_url)}",
                self._connect_pool, retry_on=is_retried, stopping=self._stopping, logger=log,
            )  # fmt: skip
            if self._pool is None:
                return
        self._consumer = await until_ready(
            f"mirror: Kafka at {redact(self.settings.kafka_bootstrap)}",
            self._join_group, retry_on=_kafka_unreachable, stopping=self._stopping,
            logger=log, quiet=("aiokafka",),  # aiokafka logs each refused bootstrap at ERROR
        )  # fmt: skip
        self.stats = MirrorStats()

    async def _connect_pool(self) -> asyncpg.Pool:
        # One connection per writer: each writer has one transaction open at a time.
        return await connect_pool(
            self.settings.namespace_database_url, min_size=self.writers, max_size=self.writers
        )

    async def _join_group(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            **aiokafka_kwargs(self.settings),
            group_id=self.group_id,
            # Shown by the cluster view as the mirror's member.
            client_id=f"{self.names.mirror_group}:{socket.gethostname()}:{os.getpid()}",
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=self.settings.heartbeat_interval_ms,
            # A revoke waits for the batch being written; a 20k batch takes well under this.
            rebalance_timeout_ms=60_000,
            # Room for a whole batch in one poll of each partition under load.
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            fetch_max_wait_ms=FETCH_WAIT_MS,
            # aiokafka's fetcher wakes this often even with a fetch in flight, and each wake
            # walks all 64 partitions in Python: at its default, 0.2 s, that was 0.01 core of
            # an idle mirror. It is woken at once by a response, an assignment or a seek, so
            # this is only its fallback.
            consumer_timeout_ms=FETCH_WAIT_MS,
        )
        consumer.subscribe([self.names.events], listener=_DrainOnRevoke(self))
        try:
            await consumer.start()
        except BaseException as exc:
            await consumer.stop()  # closes what the failed start opened
            if isinstance(exc, KafkaError) and (reason := await refusal(self.settings, 5.0)):
                # Still retried (credentials may be being rotated), but the log says why.
                raise KafkaConnectionError(f"refused: {reason}") from exc
            raise
        return consumer

    async def run(self) -> None:
        """Mirror batches until `stop()`; then write what was fetched and return."""
        if self._consumer is None and self._stopping.is_set():
            return  # stopped while start() waited for the services
        assert self._consumer is not None, "call start() first"
        self._run_done = asyncio.Event()
        next_report = time.monotonic() + self.report_interval_s
        next_lag = 0.0
        try:
            while not self._stopping.is_set():
                fetched = await self._consumer.getmany(
                    timeout_ms=self.fetch_timeout_ms, max_records=self.max_records
                )
                self._last_fetch = time.monotonic()
                if self._last_fetch >= next_lag:
                    next_lag = self._last_fetch + LAG_REFRESH_S
                    await self._measure_lag()
                if fetched:
                    await self._dispatch(fetched)
                    if sum(map(len, fetched.values())) < LINGER_BELOW:
                        await asyncio.sleep(LINGER_S)
                if time.monotonic() >= next_report:
                    next_report = time.monotonic() + self.report_interval_s
                    await self._report()
            await self.drain()
        finally:
            self._run_done.set()

    def request_stop(self) -> None:
        """Ask `run()` to return after its current batch (safe from a signal handler)."""
        self._stopping.set()

    async def stop(self) -> None:
        """Stop `run()` (if it runs), write what it fetched, leave the group, close the pool."""
        self._stopping.set()
        if self._run_done is not None:
            await self._run_done.wait()
        else:
            await self.drain()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._pool is not None and self._owns_pool:
            await self._pool.close()
            self._pool = None

    async def drain(self) -> None:
        """Wait until every fetched batch is in PostgreSQL and its offsets are committed."""
        tasks = [t for t in self._inflight if t is not None]
        if tasks:
            await asyncio.gather(*tasks)

    # -- lag -----------------------------------------------------------------------------------

    async def lag(self) -> int:
        """Events in Kafka not yet in PostgreSQL: end offsets minus positions, plus in flight.

        End offsets are last-stable offsets (read_committed), so open transactions don't count.
        """
        consumer = self._consumer
        if consumer is None:
            return 0
        tps = list(consumer.assignment())
        if not tps:
            return self._pending
        ends = await consumer.end_offsets(tps)
        behind = 0
        for tp in tps:
            position = await consumer.position(tp)
            behind += max(0, ends[tp] - position)
        return behind + self._pending

    async def _measure_lag(self) -> None:
        """Set the lag metrics from the consumer's cached end offsets (see the docstring):
        events not read yet (end minus position) and read but not yet in PostgreSQL; and,
        over the partitions that have either, the age of the last event written from them
        (or the mirror's uptime, if it has written none yet)."""
        consumer = self._consumer
        if consumer is None:
            return
        now_ms = time.time() * 1000
        started_ms = now_ms - (time.monotonic() - self.stats.started) * 1000
        events, age_ms = self._pending, 0.0
        try:
            # One deadline for all 64 (not a wait_for each: that is a task and three turns
            # of the loop per partition, every LAG_REFRESH_S, a visible share of an idle
            # mirror's CPU). A position is only awaited while it is being reset.
            async with asyncio.timeout(1.0):
                for tp in consumer.assignment():
                    end = consumer.last_stable_offset(tp)  # None until fetched from
                    unread = 0
                    if end is not None:  # fetched from: its position is known, no request
                        try:
                            unread = max(0, end - await consumer.position(tp))
                        except IllegalStateError:  # revoked meanwhile
                            continue
                    written = self._written.get(tp.partition)
                    in_flight = self._fetched.get(tp.partition, 0) > (written[0] if written else 0)
                    events += unread
                    if unread or in_flight:
                        newest = written[1] if written is not None else started_ms
                        age_ms = max(age_ms, now_ms - newest)
        except TimeoutError:
            return  # a partition resetting its position: measured again next time
        self.metrics.lag_events = events
        self.metrics.lag_seconds = age_ms / 1000

    def forget(self, revoked: list[TopicPartition]) -> None:
        """Partitions moved to another mirror: their lag is its to report."""
        for tp in revoked:
            self._written.pop(tp.partition, None)
            self._fetched.pop(tp.partition, None)

    async def alive(self) -> tuple[bool, dict[str, object]]:
        """/healthz: answering proves the loop runs."""
        return True, {"stopping": self._stopping.is_set()}

    async def ready(self) -> tuple[bool, dict[str, object]]:
        """/readyz: consuming (fetched recently) and PostgreSQL reachable."""
        running = self._run_done is not None and not self._run_done.is_set()
        consuming = running and time.monotonic() - self._last_fetch < STALLED_S
        database = time.monotonic() - self._last_write < DB_RECENT_S or await self._db_answers()
        return consuming and database, {"consuming": consuming, "database": database}

    async def _db_answers(self) -> bool:
        pool = self._pool
        if pool is None:
            return False
        try:
            return bool(await asyncio.wait_for(pool.fetchval("SELECT 1"), DB_PROBE_TIMEOUT_S))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False

    # -- the pipeline ------------------------------------------------------------------------

    async def _dispatch(self, fetched: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Decode a fetched batch, then hand each shard to its writer after the writer's last."""
        shards = self._decode(fetched)
        for index, shard in enumerate(shards):
            if shard is None:
                continue
            previous = self._inflight[index]
            if previous is not None:
                await previous  # one batch per writer at a time: a shard's batches stay in order
            self._pending += shard.records
            self._inflight[index] = asyncio.get_running_loop().create_task(
                self._write_and_commit(shard)
            )

    def _decode(self, fetched: dict[TopicPartition, list[ConsumerRecord]]) -> list[Shard | None]:
        shards: list[Shard | None] = [None] * self.writers
        for tp, records in fetched.items():
            if not records:
                continue
            index = tp.partition % self.writers
            shard = shards[index]
            if shard is None:
                shard = shards[index] = Shard([], {}, 0)
            for record in records:
                try:
                    row = decode_event(record.value, tp.partition, record.offset)
                except MalformedEvent as exc:
                    self._count_malformed(tp, record.offset, exc.reason)
                    continue
                if row.schema > EVENT_SCHEMA:
                    self.stats.newer_schema += 1  # stored as is; only the fold may miss fields
                shard.rows.append(row)
            shard.offsets[tp] = self._fetched[tp.partition] = records[-1].offset + 1
            shard.times[tp.partition] = records[-1].timestamp
            shard.records += len(records)
        for shard in shards:
            if shard is not None:
                shard.rows = sort_and_dedupe(shard.rows)
        return shards

    async def _write_and_commit(self, shard: Shard) -> None:
        try:
            await self._write(shard.rows)
        except _GaveUp:
            return  # stopping with the database away: offsets stay, the batch is replayed
        finally:
            self._pending -= shard.records
        self.stats.batches += 1
        self.stats.events_seen += len(shard.rows)
        self._last_write = time.monotonic()
        for tp, offset in shard.offsets.items():
            self._written[tp.partition] = (offset, shard.times[tp.partition])
        await self._commit(shard.offsets)

    async def _write(self, rows: Sequence[EventRow]) -> None:
        """Write rows; bisect a batch PostgreSQL refuses down to the events that fail alone.

        1. write the batch in one transaction, waiting out transient and setup failures;
        2. if PostgreSQL refuses the data, write each half the same way, in order, so each
           execution's versions still arrive in order;
        3. an event refused alone is set aside in mirror_rejects and skipped.
        """

        async def write(conn: asyncpg.Connection) -> None:
            started = time.perf_counter()
            # Not `+= await ...`: that reads the counter before the await and loses updates.
            written = await write_batch(conn, rows, self.names.mirrored_channel)
            self.metrics.write_seconds.observe(time.perf_counter() - started)
            self.stats.events_written += written

        refusal = await self._retrying(write)
        if refusal is None:
            return
        if len(rows) == 1:
            await self._reject(rows[0], refusal)
            return
        middle = len(rows) // 2
        await self._write(rows[:middle])
        await self._write(rows[middle:])

    async def _retrying(
        self, operation: Callable[[asyncpg.Connection], Awaitable[None]]
    ) -> Exception | None:
        """Run `operation` on a pooled connection until it succeeds (None) or PostgreSQL refuses
        the data (that refusal, returned). Raises _GaveUp if stopping while it cannot write."""
        backoff = Backoff()
        while True:
            assert self._pool is not None
            try:
                async with self._pool.acquire() as conn:
                    await operation(conn)
                return None
            except Exception as exc:
                fault = classify(exc)
                if fault is None:
                    raise
                if fault is Fault.DATA:
                    return exc
                delay = backoff.next_delay()
                cause = "is unreachable" if fault is Fault.TRANSIENT else "needs an operator"
                log.warning("mirror: PostgreSQL %s (%s); retrying the batch in %.1f s",
                            cause, _describe(exc), delay)  # fmt: skip
            if self._stopping.is_set():
                raise _GaveUp
            self.stats.db_retries += 1
            await asyncio.sleep(delay)

    async def _reject(self, row: EventRow, refusal: Exception) -> None:
        """Set one refused event aside in mirror_rejects; log it the first time only."""
        state, message = sqlstate(refusal), _describe(refusal)
        recorded: list[bool] = []

        async def record(conn: asyncpg.Connection) -> None:
            recorded.append(await record_reject(conn, row, state, message))

        unrecordable = await self._retrying(record)
        self.stats.rejected += 1
        where = (f"event {row.execution_id} v{row.version} "
                 f"(partition {row.kafka_partition} offset {row.kafka_offset})")  # fmt: skip
        if unrecordable is not None:
            log.error(
                "mirror: skipping %s: PostgreSQL refused it (%s) and refused to record it in "
                "mirror_rejects (%s)", where, message, _describe(unrecordable),
            )  # fmt: skip
        elif recorded and recorded[-1]:
            log.error("mirror: set aside %s in mirror_rejects: PostgreSQL refused it (%s)",
                      where, message)  # fmt: skip

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit offsets of partitions we still own; a lost partition's new owner replays."""
        consumer = self._consumer
        if consumer is None or not offsets:
            return
        owned = consumer.assignment()
        mine = {tp: OffsetAndMetadata(o, "") for tp, o in offsets.items() if tp in owned}
        if not mine:
            return
        try:
            await consumer.commit(mine)
        except (CommitFailedError, IllegalStateError) as exc:
            self.stats.commit_failures += 1
            log.info(
                "mirror: offset commit skipped after a rebalance (%s); replay is harmless", exc
            )
        except KafkaError as exc:
            self.stats.commit_failures += 1
            log.warning("mirror: offset commit failed (%s); those events will be replayed", exc)

    def _count_malformed(self, tp: TopicPartition, offset: int, reason: str) -> None:
        self.stats.malformed += 1
        if self.stats.malformed <= MAX_LOGGED_MALFORMED:
            log.warning(
                "mirror: skipping malformed record at %s[%d] offset %d: %s",
                tp.topic, tp.partition, offset, reason,
            )  # fmt: skip

    async def _report(self) -> None:
        s = self.stats
        elapsed = max(time.monotonic() - s.started, 1e-9)
        try:
            lag = await self.lag()
        except KafkaError as exc:
            log.warning("mirror: lag unknown (%s)", exc)
            lag = -1
        log.info(
            "mirror: %d events (%d new) in %d batches, %.0f events/s, lag %d, "
            "malformed %d, rejected %d, db retries %d",
            s.events_seen, s.events_written, s.batches, s.events_seen / elapsed, lag,
            s.malformed, s.rejected, s.db_retries,
        )  # fmt: skip


def _describe(exc: BaseException) -> str:
    """One line: the SQLSTATE (if any), the exception's type and the first line of its text."""
    text = str(exc).strip().splitlines()
    state = sqlstate(exc)
    return (f"{state} " if state else "") + type(exc).__name__ + (f": {text[0]}" if text else "")


def _where(database_url: str) -> str:
    """host:port of a database URL: what a log line may show (never the password)."""
    parts = urlsplit(database_url)
    return f"{parts.hostname}:{parts.port or 5432}"


def _kafka_unreachable(exc: BaseException) -> bool:
    return isinstance(exc, (KafkaError, OSError, TimeoutError))


class _GaveUp(Exception):
    """A write abandoned because the mirror is stopping and the database is unreachable."""


class _DrainOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Before partitions move, finish writing (and committing) what was fetched from them."""

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.mirror.drain()
        self.mirror.forget(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        topic = self.mirror.names.events
        log.info("mirror: assigned %d partitions of %s", len(assigned), topic)
