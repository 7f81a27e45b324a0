"""What an entrance (the API, the CLI) can know is wrong before it produces a command.

A command that is wrong in a way only the worker can see is dead-lettered later; these checks
refuse at once what can be known now, and accept whatever they cannot be sure of (a Kafka or
PostgreSQL that does not answer in time, a worker whose registry is not known), since a
refusal that is wrong loses a good command while an acceptance that is wrong only delays an
error to the DLQ.

- `check_start`: a start naming a workflow that no live worker runs is refused (409), when
  every live worker has published its registry (cerebelum.admin.workflows). With no live worker
  at all the start is accepted: it waits on its partition for the first worker.
- `check_target`: a signal or cancel for an execution PostgreSQL shows as ended is refused
  (409); for one PostgreSQL does not have, 404, but only once the execution's partition is
  settled (`partition_settled`): otherwise it may have been started a moment ago.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from cerebelum._aiokafka import start_or_stop, stop_quietly
from cerebelum.admin.cluster import ClusterInspector
from cerebelum.admin.workflows import LiveWorkflows, WorkflowDirectory
from cerebelum.config import Settings
from cerebelum.constants import (
    PARTITIONS,
)
from cerebelum.core.ids import home_partition
from cerebelum.core.state import TERMINAL
from cerebelum.security.kafka import aiokafka_kwargs

log = logging.getLogger(__name__)

# A check is a few small requests; past this it is abandoned and the command accepted: a check
# must never be why a good command is late or lost.
CHECK_TIMEOUT_S = 3.0
# The settled-partition probe reads from the mirror's offset to the end: markers and aborted
# batches only, when the mirror is caught up, which one fetch returns at once.
PROBE_FETCH_MS = 200


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a command is refused: an HTTP status, a one-line message, and fields for the body."""

    status: int  # 404 or 409
    message: str
    details: dict[str, Any] = field(default_factory=dict)


# --- starts -----------------------------------------------------------------------------------


def unknown_workflow(workflow: str, live: LiveWorkflows) -> Refusal | None:
    """409 if every live worker's registry is known and none runs `workflow`."""
    if not live.complete or workflow in live.workflows:
        return None
    return Refusal(
        409,
        f"no live worker runs workflow {workflow!r}",
        {"workflow": workflow, "workflows": sorted(live.workflows)},
    )


async def check_start(
    directory: WorkflowDirectory, workflow: str, timeout: float = CHECK_TIMEOUT_S
) -> Refusal | None:
    """The API's check of a start, from a directory that `run()`s in the background."""
    if not directory.caught_up.is_set():
        return None  # Kafka was away since the API started: nothing is known
    try:
        async with asyncio.timeout(timeout):
            if unknown_workflow(workflow, await directory.live_workflows(cached=True)) is None:
                return None
            # About to refuse: make sure of it with every record written until now and the
            # group as it is now (a worker may have joined, or re-published, a moment ago).
            await directory.sync()
            return unknown_workflow(workflow, await directory.live_workflows())
    except (KafkaError, OSError, TimeoutError) as exc:
        log.info("preflight: cannot check workflow %r (%r); accepting", workflow, exc)
        return None


async def check_start_once(
    settings: Settings, workflow: str, timeout: float = CHECK_TIMEOUT_S
) -> Refusal | None:
    """The CLI's check of a start: read the directory once, then decide."""
    directory = WorkflowDirectory(settings)
    try:
        async with asyncio.timeout(timeout):
            await directory.load()
            return unknown_workflow(workflow, await directory.live_workflows())
    except (KafkaError, OSError, TimeoutError) as exc:
        log.info("preflight: cannot check workflow %r (%r); accepting", workflow, exc)
        return None
    finally:
        await directory.close()


# --- signals and cancels ----------------------------------------------------------------------


async def execution_status(pool: asyncpg.Pool, execution_id: str) -> str | None:
    """The execution's status as the mirror last wrote it, or None if it has no row."""
    status = await pool.fetchval(
        "SELECT status FROM executions WHERE execution_id = $1", execution_id
    )
    return None if status is None else str(status)


def _ended(execution_id: str, status: str | None) -> Refusal | None:
    if status not in TERMINAL:
        return None
    return Refusal(
        409,
        f"execution {execution_id} has ended ({status})",
        {"execution_id": execution_id, "status": status},
    )


async def check_target(
    pool: asyncpg.Pool,
    probe: PartitionProbe,
    execution_id: str,
    timeout: float = CHECK_TIMEOUT_S,
) -> Refusal | None:
    """Refuse a signal or cancel whose execution has ended (409) or does not exist (404).

    1. PostgreSQL has the execution: refuse if it ended, else accept;
    2. it has not: accept unless the execution's partition is settled (`partition_settled`);
    3. read PostgreSQL again (the mirror may have written the row between 1 and 2): no row
       now means no execution (404).
    """
    try:
        async with asyncio.timeout(timeout):
            status = await execution_status(pool, execution_id)
            if status is not None:
                return _ended(execution_id, status)
            if not await probe.partition_settled(home_partition(execution_id, PARTITIONS)):
                return None
            status = await execution_status(pool, execution_id)
    except (
        KafkaError,
        OSError,
        TimeoutError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ) as exc:
        log.info("preflight: cannot check execution %s (%r); accepting", execution_id, exc)
        return None
    if status is None:
        return Refusal(404, "execution not found", {"execution_id": execution_id})
    return _ended(execution_id, status)


class PartitionProbe:
    """Tells whether everything acknowledged on a partition has reached PostgreSQL."""

    def __init__(self, settings: Settings, inspector: ClusterInspector | None = None) -> None:
        self.settings = settings
        self._own_inspector = inspector is None
        self.inspector = inspector or ClusterInspector(settings)
        self._reader: AIOKafkaConsumer | None = None
        self._uncommitted: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def partition_settled(self, partition: int) -> bool:
        """True if every command on cerebelum.commands[partition] acknowledged before this call
        has been run and its events are in PostgreSQL.

        1. The worker group's committed offset on commands[p] is at its end: every command
           there was run, and its events were written in the same transaction.
        2. No transaction is open on events[p] (its last stable offset is at its high
           watermark): the transactions of step 1 have their markers, so their events can be
           read.
        3. The mirror group's committed offset on events[p] covers every committed event: it is
           at the end, or only markers and aborted batches lie between (one read tells), and
           the mirror commits an offset only after PostgreSQL committed the events before it.

        The order matters: each step is read after the one it depends on has happened.
        """
        async with self._lock:
            reader, uncommitted = await self._open()
            n = self.settings.names
            commands = TopicPartition(n.commands, partition)
            events = TopicPartition(n.events, partition)
            # 1. commands run. Never committed: the group starts from the first offset held.
            ran = (await self.inspector.committed(n.worker_group, n.commands)).get(partition)
            if ran is None:
                ran = (await reader.beginning_offsets([commands]))[commands]
            if ran < (await reader.end_offsets([commands]))[commands]:
                return False
            # 2. no open transaction on events (high watermark read before the stable offset).
            high = (await uncommitted.end_offsets([events]))[events]
            stable = (await reader.end_offsets([events]))[events]
            if stable < high:
                return False
            # 3. the mirror wrote every committed event.
            mirrored = (await self.inspector.committed(n.mirror_group, n.events)).get(partition)
            if mirrored is None:
                mirrored = (await reader.beginning_offsets([events]))[events]
            if mirrored >= stable:
                return True
            return await self._only_markers(reader, events, mirrored, stable)

    async def _only_markers(
        self, reader: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int
    ) -> bool:
        """True if [start, end) holds no committed record (transaction markers, aborted data)."""
        reader.assign([tp])
        reader.seek(tp, start)
        try:
            position = start
            while position < end:
                records = (await reader.getmany(tp, timeout_ms=PROBE_FETCH_MS)).get(tp, [])
                if any(r.offset < end for r in records):
                    return False
                moved, position = position, await reader.position(tp)
                if position == moved and not records:
                    return False  # nothing came back: cannot tell, so not settled
            return True
        finally:
            reader.unsubscribe()  # no background fetching between probes

    async def _open(self) -> tuple[AIOKafkaConsumer, AIOKafkaConsumer]:
        if self._reader is None or self._uncommitted is None:
            reader = AIOKafkaConsumer(
                **aiokafka_kwargs(self.settings),
                isolation_level="read_committed",  # end offsets are last stable offsets
                enable_auto_commit=False,
            )
            uncommitted = AIOKafkaConsumer(
                **aiokafka_kwargs(self.settings),
                isolation_level="read_uncommitted",  # end offsets are high watermarks
                enable_auto_commit=False,
            )
            await start_or_stop(reader)
            try:
                await start_or_stop(uncommitted)
            except BaseException:
                await stop_quietly(reader)
                raise
            self._reader, self._uncommitted = reader, uncommitted
        return self._reader, self._uncommitted

    async def close(self) -> None:
        reader, uncommitted = self._reader, self._uncommitted
        self._reader = self._uncommitted = None
        for consumer in (reader, uncommitted):
            if consumer is not None:
                await consumer.stop()
        if self._own_inspector:
            await self.inspector.close()
