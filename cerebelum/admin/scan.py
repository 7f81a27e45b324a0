"""Reading what `cerebelum verify` checks, and running the checks of admin/verify.py on it.

    report = await verify(settings, since_ms=None, use_db=True, progress=None)

In order (the order makes "processed" mean the same thing in every read):
1. the worker group's committed offsets on cerebelum.commands; a command below its partition's
   committed offset was processed, and its events were committed in the same transaction;
2. the topics' partition counts (a count other than the declared one is a note, and every
   partition is read, past PARTITIONS too) and the end offsets (last stable offsets) of the
   commands, events and DLQ topics, taken after 1, so they cover every processed command's
   events and dead letters;
3. cerebelum.events (read_committed) up to its ends: every history, checked one by one;
4. cerebelum.dlq up to its ends: the (partition, offset) of every dead-lettered command;
5. cerebelum.commands up to its ends, checked chunk by chunk against 3 and 4;
6. with --since-ms, histories started before the window: start-commands that found no
   ExecutionStarted in the window are looked up in the events before it;
7. unless --no-db: the mirror's committed offsets; each history the mirror has gone past is
   compared with its rows in PostgreSQL.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import asyncpg
from aiokafka.structs import ConsumerRecord

from cerebelum.admin.cluster import ClusterInspector
from cerebelum.admin.reading import Offsets, Progress, read_topic, start_offsets
from cerebelum.admin.topics import partition_count_problems
from cerebelum.admin.verify import (
    LOST_START,
    MALFORMED_EVENT,
    CommandRecord,
    Finding,
    KafkaHistory,
    Report,
    SeenEvent,
    check_commands,
    check_database,
    check_history,
    read_event,
)
from cerebelum.config import Settings
from cerebelum.constants import (
    HEADER_DLQ_SOURCE_OFFSET,
    HEADER_DLQ_SOURCE_PARTITION,
    HEADER_DLQ_SOURCE_TOPIC,
    PARTITIONS,
)
from cerebelum.core.events import EXECUTION_STARTED
from cerebelum.mirror.fold import MalformedEvent

# Ids per PostgreSQL query: bounds one statement's array parameter and its time.
DB_CHUNK = 5_000

# One lookup per id: `execution_id = ANY($1)` cannot prune the 64 hash partitions and probes
# every one of them for every id; an equality per id (LATERAL) prunes to one, twice as fast.
STORED_EVENTS = """
SELECT u.id AS execution_id, s.n, s.v
FROM unnest($1::text[]) AS u(id)
CROSS JOIN LATERAL (
    SELECT count(*)::int AS n, max(version) AS v FROM events WHERE execution_id = u.id
) AS s
"""


async def verify(
    settings: Settings,
    *,
    since_ms: int | None = None,
    use_db: bool = True,
    progress: Progress | None = None,
) -> Report:
    """Read and check everything (see the module docstring for the order); never raises on
    a finding, only on a Kafka or PostgreSQL that cannot be read."""
    report = Report()
    inspector = ClusterInspector(settings)
    n = settings.names
    try:
        committed = await inspector.committed(n.worker_group, n.commands)
        topics = (n.commands, n.events, n.dlq)
        counts = await inspector.partition_counts(list(topics))
        report.notes.extend(partition_count_problems(counts, names=n))
        ends = {
            topic: await inspector.end_offsets(topic, counts.get(topic, PARTITIONS))
            for topic in topics
        }
        window = await start_offsets(settings, n.events, ends[n.events], since_ms)
        histories, started = await _read_events(settings, window, ends[n.events], report, progress)
        dead = await _read_dlq(settings, ends[n.dlq], progress)

        def check_chunk(partition: int, records: list[ConsumerRecord]) -> None:
            chunk = (CommandRecord(partition, r.offset, r.value) for r in records)
            check_commands(
                chunk, started, dead, committed, into=report.commands, namespace=n.namespace
            )

        starts = await start_offsets(settings, n.commands, ends[n.commands], since_ms)
        await read_topic(settings, n.commands, starts, ends[n.commands], check_chunk, progress)
        if since_ms is not None:
            await _resolve_older_starts(settings, report, window, progress)
        report.findings.extend(report.commands.findings)
        whole = {p for p, start in window.items() if start == 0}
        kafka = _check_histories(report, histories, whole)
        if use_db:
            mirrored = await inspector.committed(n.mirror_group, n.events)
            await _compare_database(settings, report, histories, kafka, mirrored)
        else:
            report.notes.append("PostgreSQL not compared (--no-db)")
    finally:
        await inspector.close()
    return report


def _check_histories(
    report: Report, histories: dict[str, list[SeenEvent]], whole: set[int]
) -> dict[str, KafkaHistory]:
    """Check each history; return what PostgreSQL is compared with.

    `whole`: the partitions read from offset 0. Elsewhere the read began later (--since-ms, or
    retention deleted the oldest records), and a history not seen from version 1 began before.
    """
    kafka: dict[str, KafkaHistory] = {}
    for eid, events in histories.items():
        versions = {e.version for e in events}
        complete = events[0].partition in whole or min(versions) == 1
        report.findings.extend(check_history(eid, events, complete))
        kafka[eid] = KafkaHistory(len(versions), max(versions), complete)
    report.executions = len(histories)
    return kafka


async def _read_events(
    settings: Settings, starts: Offsets, ends: Offsets, report: Report, progress: Progress | None
) -> tuple[dict[str, list[SeenEvent]], set[str]]:
    histories: dict[str, list[SeenEvent]] = defaultdict(list)
    started: set[str] = set()

    def handle(partition: int, records: list[ConsumerRecord]) -> None:
        for r in records:
            try:
                eid, seen = read_event(r.value, partition, r.offset)
            except MalformedEvent as exc:
                finding = Finding(MALFORMED_EVENT, None, exc.reason, partition, r.offset)
                report.findings.append(finding)
                continue
            histories[eid].append(seen)
            if seen.type == EXECUTION_STARTED:
                started.add(eid)

    report.events = await read_topic(
        settings, settings.names.events, starts, ends, handle, progress
    )
    return histories, started


async def _read_dlq(
    settings: Settings, ends: Offsets, progress: Progress | None
) -> set[tuple[int, int]]:
    """(source partition, source offset) of every dead-lettered command."""
    dead: set[tuple[int, int]] = set()

    def handle(partition: int, records: list[ConsumerRecord]) -> None:
        for r in records:
            headers = {k: v for k, v in r.headers or ()}
            if headers.get(HEADER_DLQ_SOURCE_TOPIC, b"").decode() != settings.names.commands:
                continue
            try:
                partition = int(headers[HEADER_DLQ_SOURCE_PARTITION])
                offset = int(headers[HEADER_DLQ_SOURCE_OFFSET])
            except (KeyError, ValueError):
                continue  # not a dead letter the workers wrote; nothing to match
            dead.add((partition, offset))

    await read_topic(settings, settings.names.dlq, {}, ends, handle, progress)
    return dead


async def _resolve_older_starts(
    settings: Settings, report: Report, window: Offsets, progress: Progress | None
) -> None:
    """Drop lost-start findings whose ExecutionStarted is older than the window (a repeated
    start of an execution begun earlier): read those partitions' events before the window."""
    lost = [f for f in report.commands.findings if f.kind == LOST_START]
    if not lost:
        return
    ids = {f.execution_id for f in lost}
    partitions = {f.partition for f in lost if f.partition is not None}
    found: set[str] = set()

    def handle(partition: int, records: list[ConsumerRecord]) -> None:
        for r in records:
            try:
                eid, seen = read_event(r.value, partition, r.offset)
            except MalformedEvent:
                continue  # reported by the main read if it is in the window; not a start anyway
            if eid in ids and seen.type == EXECUTION_STARTED:
                found.add(eid)

    ends = {p: window.get(p, 0) for p in partitions}
    await read_topic(settings, settings.names.events, {}, ends, handle, progress)
    report.commands.findings = [
        f
        for f in report.commands.findings
        if not (f.kind == LOST_START and f.execution_id in found)
    ]


async def _compare_database(
    settings: Settings,
    report: Report,
    histories: dict[str, list[SeenEvent]],
    kafka: dict[str, KafkaHistory],
    mirrored: Offsets,
) -> None:
    """Compare the histories the mirror has committed past; count the others as not mirrored."""
    ready = {}
    for eid, events in histories.items():
        last = max(e.offset for e in events)
        if last < mirrored.get(events[0].partition, 0):
            ready[eid] = kafka[eid]
    report.not_mirrored = len(histories) - len(ready)
    if report.not_mirrored:
        report.notes.append(
            f"{report.not_mirrored} execution(s) not compared with PostgreSQL: the mirror has "
            "not committed past their last event yet (is it running? is it behind?)"
        )
    stored_events, stored_last = await stored_summaries(settings.namespace_database_url, ready)
    report.compared = len(ready)
    report.findings.extend(check_database(ready, stored_events, stored_last))


async def stored_summaries(
    database_url: str, ids: Iterable[str]
) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """Per execution: (events rows, max version) and executions.last_version."""
    events: dict[str, tuple[int, int]] = {}
    last: dict[str, int] = {}
    ids = list(ids)
    if not ids:
        return events, last
    conn = await asyncpg.connect(database_url)
    try:
        for i in range(0, len(ids), DB_CHUNK):
            chunk = ids[i : i + DB_CHUNK]
            for r in await conn.fetch(STORED_EVENTS, chunk):
                if r["n"]:
                    events[r["execution_id"]] = (r["n"], r["v"])
            for r in await conn.fetch(
                "SELECT execution_id, last_version FROM executions "
                "WHERE execution_id = ANY($1::text[])",
                chunk,
            ):
                last[r["execution_id"]] = r["last_version"]
    finally:
        await conn.close()
    return events, last
