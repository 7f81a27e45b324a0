"""Restore: read cerebelum.state partitions to their end and rebuild the live executions.

The state topic is compacted and keyed by execution id, so its last record per key is the
execution's latest snapshot. A partition's snapshots and its input offset are committed in one
transaction, and the take-over reads the committed offset first (which waits out a previous
owner's transaction still in flight), so the states restored here match exactly the point
the committed offset resumes from. Reading stops at each partition's last stable offset
(read_committed): nothing of an aborted or still-open transaction is restored.

Restore does not decode snapshots. Each state record carries a header with what recovery needs
(is the execution finished, does it have a step in flight, its pending timers); the snapshot
stays as the record's bytes until an input for that execution arrives. A million parked
executions then cost their bytes and a timer-heap entry each, and restore runs at the speed
the records arrive.

`restore_partitions` blocks (librdkafka); the worker runs it in a thread.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from cerebelum._librdkafka import take
from cerebelum.constants import (
    HEADER_STATE_RECOVERY,
    HEADER_STATE_WORKFLOW,
    HEADER_STATE_WRITER,
    STATE_OWNER_KEY,
)
from cerebelum.core.state import Execution

log = logging.getLogger(__name__)

# Large fetches: restore reads whole partitions, and fewer round trips is what makes it fast.
FETCH_MAX_BYTES = 64 * 1024 * 1024
MAX_PARTITION_FETCH_BYTES = 16 * 1024 * 1024

# The recovery header: a flag byte, then one "fire_at timer_id" line per pending timer.
FINISHED = b"F"  # terminal: kept only to recognise a repeated start
RUNNING = b"R"  # a step was in flight: decode and re-dispatch it at once
PARKED = b"P"  # sleeping or waiting: nothing to do until a timer or a signal
# Held for want of its version (decisions.md §6): nothing to do unless this worker has that
# version (or a migration from it); its timers are re-armed when it resumes, so none are listed.
BLOCKED = b"B"


def recovery_header(ex: Execution) -> bytes:
    if ex.terminal:
        return FINISHED
    if ex.blocked is not None:
        return BLOCKED
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
    # Blocked executions (decisions.md §6), resumed at once if this worker can run them.
    blocked: list[str] = field(default_factory=list)
    # (workflow, version) -> its live executions (those whose state record names it).
    versions: dict[tuple[str, str], list[str]] = field(default_factory=dict)


class StateReader:
    """Reads partitions of cerebelum.state from the beginning, keeping each execution's latest
    snapshot, its recovery header, and each partition's last writer (the transactional id on
    the newest record read). Blocking; one thread at a time."""

    def __init__(self, kafka_config: dict[str, Any], partitions: list[int], topic: str) -> None:
        self.partitions = partitions
        self.topic = topic  # the namespace's state topic
        self._states: dict[int, dict[str, bytes]] = {p: {} for p in partitions}
        self._headers: dict[int, dict[str, bytes | None]] = {p: {} for p in partitions}
        self._workflows: dict[int, dict[str, bytes]] = {p: {} for p in partitions}
        self._interned: dict[bytes, bytes] = {}
        self.writers: dict[int, str] = {}
        self.records = 0
        self._position = dict.fromkeys(partitions, 0)  # the next offset to read
        # Where each partition's last end-of-partition event came (librdkafka sends one only
        # when the end moves, so a partition already at its target must not wait for another).
        self._eof_at = dict.fromkeys(partitions, -1)
        reader = {
            **kafka_config,
            # Never joins the group or commits: it only reads (assign, not subscribe).
            "group.id": "cerebelum-restore",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.max.bytes": FETCH_MAX_BYTES,
            "max.partition.fetch.bytes": MAX_PARTITION_FETCH_BYTES,
        }
        # Committed records only, stopping at each partition's last stable offset.
        self._consumer = Consumer(
            {**reader, "isolation.level": "read_committed", "enable.partition.eof": True}
        )
        # Only asks for high watermarks: the end of what was written, committed or not.
        self._watermarks = Consumer({**reader, "isolation.level": "read_uncommitted"})
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def close(self) -> None:
        self._consumer.close()
        self._watermarks.close()

    def high_watermarks(self, timeout: float) -> dict[int, int]:
        """Each partition's high watermark now (open transactions included)."""
        out = {}
        for p in self.partitions:
            _, high = self._watermarks.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout, cached=False
            )
            out[p] = high
        return out

    def read_to_stable_end(self) -> dict[int, int]:
        """Read every partition to its last stable offset; returns where each stopped."""
        return self._read(dict.fromkeys(self.partitions, 0), deadline=None)

    def read_past(self, targets: dict[int, int], timeout: float) -> bool:
        """Read until each partition's last stable offset reaches its target (transactions
        open there have ended). False if that took longer than `timeout`."""
        ends = self._read(targets, deadline=time.monotonic() + timeout)
        return all(ends[p] >= targets[p] for p in self.partitions)

    def _read(self, targets: dict[int, int], deadline: float | None) -> dict[int, int]:
        eof_at = self._eof_at
        ends = {p: eof_at[p] for p in self.partitions if eof_at[p] >= targets[p]}
        remaining = set(self.partitions) - set(ends)
        states, headers, position = self._states, self._headers, self._position
        workflows, interned = self._workflows, self._interned
        while remaining:
            if deadline is not None and time.monotonic() > deadline:
                break
            for m in take(self._consumer, 0.2):
                error = m.error()
                p = cast(int, m.partition())
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        # EOF comes at the last stable offset: done once that passed the target
                        end = eof_at[p] = cast(int, m.offset())
                        ends[p] = position[p] = max(position[p], end)
                        if end >= targets[p]:
                            remaining.discard(p)
                        continue
                    if error.fatal() or not error.retriable():
                        raise KafkaException(error)
                    log.warning("restore: %s (retrying)", error.str())
                    continue
                self.records += 1
                position[p] = cast(int, m.offset()) + 1
                raw_key = cast(bytes, m.key())
                if raw_key == STATE_OWNER_KEY:  # who owned the partition: not an execution
                    _, writer, _ = _headers_of(cast(Headers, m.headers()))
                    if writer is not None:
                        self.writers[p] = writer
                    continue
                key = raw_key.decode()
                value = m.value()
                if value is None:  # a tombstone
                    states[p].pop(key, None)
                    headers[p].pop(key, None)
                    workflows[p].pop(key, None)
                    continue
                states[p][key] = value
                recovery, writer, workflow = _headers_of(cast(Headers, m.headers()))
                headers[p][key] = recovery
                if workflow is not None:  # one object per version, shared by its executions
                    workflows[p][key] = interned.setdefault(workflow, workflow)
                else:
                    workflows[p].pop(key, None)
                if writer is not None:
                    self.writers[p] = writer
        for p in remaining:
            ends.setdefault(p, position[p])
        return ends

    def result(self) -> dict[int, RestoredPartition]:
        return {
            p: _index(self._states[p], self._headers[p], self._workflows[p])
            for p in self.partitions
        }


def restore_partitions(
    kafka_config: dict[str, Any], partitions: list[int], topic: str
) -> dict[int, RestoredPartition]:
    """Every partition's executions, timers and in-flight executions, as committed now
    (`topic`: the namespace's state topic)."""
    started = time.monotonic()
    reader = StateReader(kafka_config, partitions, topic)
    try:
        reader.read_to_stable_end()
        restored = reader.result()
    finally:
        reader.close()
    log_restored(restored, reader.records, time.monotonic() - started)
    return restored


def log_restored(restored: dict[int, RestoredPartition], records: int, seconds: float) -> None:
    log.info(
        "restored %d partitions: %d executions (%d in flight, %d timers) from %d records "
        "in %.2fs",
        len(restored),
        sum(len(r.executions) for r in restored.values()),
        sum(len(r.running) for r in restored.values()),
        sum(len(r.timers) for r in restored.values()),
        records,
        seconds,
    )


Headers = list[tuple[str, bytes]] | None


def _header_of(snapshot: bytes) -> bytes | None:
    """The recovery header of a snapshot written before the header existed."""
    try:
        return recovery_header(Execution.from_record(orjson.loads(snapshot)))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _headers_of(headers: Headers) -> tuple[bytes | None, str | None, bytes | None]:
    """A state record's recovery header (None if written before it existed: then the snapshot
    is decoded once, in _index), its writer's transactional id and its workflow header."""
    recovery = writer = workflow = None
    for name, value in headers or ():
        if name == HEADER_STATE_RECOVERY:
            recovery = bytes(value)
        elif name == HEADER_STATE_WRITER:
            writer = bytes(value).decode()
        elif name == HEADER_STATE_WORKFLOW:
            workflow = bytes(value)
    return recovery, writer, workflow


def workflow_header(ex: Execution) -> bytes:
    """The workflow header of a live execution's state record: b"<workflow>\n<version>"
    (one bytes object per version, made once: every transition writes it)."""
    key = (ex.workflow, ex.workflow_version)
    header = _WORKFLOW_HEADERS.get(key)
    if header is None:
        header = _WORKFLOW_HEADERS[key] = f"{key[0]}\n{key[1]}".encode()
    return header


# (workflow, version) -> its header; as many as the versions this worker has written for.
_WORKFLOW_HEADERS: dict[tuple[str, str], bytes] = {}


def _index(
    table: dict[str, bytes],
    recovery: dict[str, bytes | None],
    workflows: dict[str, bytes] | None = None,
) -> RestoredPartition:
    out = RestoredPartition(executions=dict(table))
    versions: dict[bytes, list[str]] = {}
    for eid, workflow in (workflows or {}).items():
        versions.setdefault(workflow, []).append(eid)
    for workflow, eids in versions.items():
        name, _, version = workflow.decode(errors="replace").partition("\n")
        out.versions[(name, version)] = eids
    for eid, maybe_header in recovery.items():
        header = maybe_header or _header_of(table[eid])
        if header is None:  # not a snapshot: skipped, so one bad record cannot stop a partition
            log.error("restore: the state record of %r is not a snapshot; skipped", eid)
            del out.executions[eid]
            continue
        flag = header[:1]
        if flag == RUNNING:
            out.running.append(eid)
        elif flag == BLOCKED:
            out.blocked.append(eid)
            continue
        if flag != FINISHED and len(header) > 1:
            for line in header[2:].split(b"\n"):
                fire_at, timer_id = line.split(b" ", 1)
                out.timers.append((int(fire_at), eid, timer_id.decode()))
    return out
