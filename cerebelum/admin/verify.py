"""Checking the invariants on what Kafka and PostgreSQL hold: pure functions, no I/O.

`cerebelum verify` reads the topics and the database (admin/scan.py) and hands what it read to:

    check_history(execution_id, events)      one execution's events (invariants 2 and 4)
    check_commands(commands, started, ...)   processed commands vs what came of them (3 and 7)
    check_database(kafka, events, last)      Kafka's histories vs the mirror's rows (6)

Finding kinds:

    version_gap            the versions are not 1..n: some are missing
    duplicate_version      one event recorded twice (identical payloads)
    conflicting_version    two different events with one version
    result_recorded_twice  a StepCompleted/StepFailed answering no open dispatch (a StepScheduled
                           opens one per step; a result without a `signal` field closes it)
    not_started            the execution's first event is not ExecutionStarted
    malformed_event        a record on cerebelum.events that is not a valid event
    two_partitions         one execution id has events on two (or more) partitions: two
                           executions ran under one id (invariant 8)
    lost_start             a processed StartExecution with no ExecutionStarted and not in the DLQ
    malformed_not_in_dlq   a processed command that does not parse and is not in the DLQ
    wrong_partition        a processed command, not in the DLQ, on a partition other than its
                           execution id's home partition (invariant 8)
    unserved_partition     a command on a partition past the PARTITIONS the workers serve (the
                           topic was grown): it never runs, processed or not
    database_mismatch      PostgreSQL's events or executions row disagree with Kafka
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cerebelum.constants import PARTITIONS
from cerebelum.core import events as ev
from cerebelum.core.commands import StartExecution, parse_command
from cerebelum.core.ids import home_partition
from cerebelum.errors import InvalidCommand
from cerebelum.mirror.fold import decode_event

VERSION_GAP = "version_gap"
DUPLICATE_VERSION = "duplicate_version"
CONFLICTING_VERSION = "conflicting_version"
RESULT_RECORDED_TWICE = "result_recorded_twice"
NOT_STARTED = "not_started"
MALFORMED_EVENT = "malformed_event"
LOST_START = "lost_start"
MALFORMED_NOT_IN_DLQ = "malformed_not_in_dlq"
TWO_PARTITIONS = "two_partitions"
WRONG_PARTITION = "wrong_partition"
UNSERVED_PARTITION = "unserved_partition"
DATABASE_MISMATCH = "database_mismatch"

_RESULTS = frozenset({ev.STEP_COMPLETED, ev.STEP_FAILED})


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    execution_id: str | None
    detail: str
    partition: int | None = None  # where the evidence is (of cerebelum.events or .commands)
    offset: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "execution_id": self.execution_id,
            "detail": self.detail,
            "partition": self.partition,
            "offset": self.offset,
        }


class SeenEvent(NamedTuple):
    """What the checks keep of one event: enough to compare, far less than the event."""

    version: int
    type: str
    step: str | None
    closes: bool  # a step result that closes a dispatch (StepCompleted/StepFailed, no signal)
    digest: bytes  # of the record value: tells a repeated event from a different one
    partition: int
    offset: int


def read_event(value: bytes | None, partition: int, offset: int) -> tuple[str, SeenEvent]:
    """(execution_id, SeenEvent) of one record; raises MalformedEvent as the mirror would."""
    row = decode_event(value, partition, offset)
    assert value is not None  # decode_event refuses None
    step = row.event.get("step")
    closes = row.type in _RESULTS and "signal" not in row.event
    seen = SeenEvent(
        row.version,
        sys.intern(row.type),  # a few distinct names over millions of events: share them
        sys.intern(step) if isinstance(step, str) else None,
        closes,
        # 8 bytes: it only tells apart two events of one version of one execution.
        hashlib.blake2b(value, digest_size=8).digest(),
        partition,
        offset,
    )
    return row.execution_id, seen


def check_history(
    execution_id: str, events: Sequence[SeenEvent], complete: bool = True
) -> list[Finding]:
    """Findings in one execution's events (any order; Kafka's offset order breaks ties).

    `complete` is False when the read began mid-history (--since-ms): versions are then
    checked from the lowest seen, and results that may answer earlier dispatches are let be.
    """
    if not events:
        return []
    findings: list[Finding] = []
    first: dict[int, SeenEvent] = {}  # version → the first event recorded with it
    for e in sorted(events, key=lambda e: (e.version, e.offset)):
        kept = first.setdefault(e.version, e)
        if kept is e:
            continue
        if kept.digest == e.digest:
            kind, detail = DUPLICATE_VERSION, f"version {e.version} ({e.type}) recorded twice"
        else:
            kind = CONFLICTING_VERSION
            detail = f"version {e.version} is both {kept.type} and {e.type}"
        where = f" (offsets {kept.offset} and {e.offset})"
        findings.append(Finding(kind, execution_id, detail + where, e.partition, e.offset))
    versions = sorted(first)
    missing = _missing(versions, 1 if complete else versions[0])
    if missing:
        findings.append(
            Finding(
                VERSION_GAP,
                execution_id,
                f"missing version(s) {missing} of 1..{versions[-1]}",
                events[0].partition,
            )
        )
    opening = first[versions[0]]
    if complete and opening.type != ev.EXECUTION_STARTED:
        findings.append(
            Finding(
                NOT_STARTED,
                execution_id,
                f"first event is {opening.type} (version {opening.version}), not ExecutionStarted",
                opening.partition,
                opening.offset,
            )
        )
    findings.extend(_results_recorded_twice(execution_id, [first[v] for v in versions], complete))
    findings.extend(_on_two_partitions(execution_id, events))
    return findings


def _on_two_partitions(execution_id: str, events: Sequence[SeenEvent]) -> list[Finding]:
    partitions = sorted({e.partition for e in events})
    if len(partitions) < 2:
        return []
    home = home_partition(execution_id, PARTITIONS)
    away = next(p for p in partitions if p != home)
    listed = ", ".join(str(p) for p in partitions)
    return [
        Finding(
            TWO_PARTITIONS,
            execution_id,
            f"events on partitions {listed} of cerebelum.events (its home partition is {home}): "
            "two executions ran under this id",
            away,
        )
    ]


def _missing(versions: list[int], low: int) -> str:
    """The versions absent from low..max(versions) as "3, 5-9" (never builds the whole range)."""
    gaps: list[str] = []
    expected = low
    for v in versions:
        if v > expected:
            gaps.append(str(expected) if v == expected + 1 else f"{expected}-{v - 1}")
        expected = max(expected, v + 1)
    return ", ".join(gaps)


def _results_recorded_twice(
    execution_id: str, history: list[SeenEvent], complete: bool
) -> list[Finding]:
    open_steps: set[str | None] = set()
    scheduled: set[str | None] = set()  # steps dispatched within what was read
    findings = []
    for e in history:
        if e.type in (ev.STEP_SCHEDULED, ev.STEP_RESCHEDULED):
            open_steps.add(e.step)
            scheduled.add(e.step)
        elif e.closes:
            if e.step in open_steps:
                open_steps.discard(e.step)
            elif complete or e.step in scheduled:
                findings.append(
                    Finding(
                        RESULT_RECORDED_TWICE,
                        execution_id,
                        f"{e.type} of step {e.step!r} at version {e.version} answers no open "
                        "dispatch (its result was already recorded)",
                        e.partition,
                        e.offset,
                    )
                )
    return findings


class CommandRecord(NamedTuple):
    partition: int
    offset: int
    value: bytes | None


@dataclass(slots=True)
class CommandCheck:
    findings: list[Finding] = field(default_factory=list)
    starts: int = 0  # processed start-commands checked
    pending: int = 0  # commands the workers have not processed yet: not a finding
    pending_starts: int = 0
    dead_lettered: int = 0  # processed commands found in the DLQ


def check_commands(
    commands: Iterable[CommandRecord],
    started: Set[str],
    dead_lettered: Set[tuple[int, int]],
    committed: Mapping[int, int],
    into: CommandCheck | None = None,
    namespace: str | None = None,
) -> CommandCheck:
    """Every processed command that parses as a start must have led to an ExecutionStarted
    (`started`: execution ids) or be in the DLQ (`dead_lettered`: its source partition and
    offset); every processed command that does not parse must be in the DLQ.

    A processed command (of any type) that is not in the DLQ must sit on its execution id's home
    partition; a command on a partition past PARTITIONS is reported whatever its state (no
    worker serves that partition, so it never runs).

    Processed means below the worker group's committed offset of its partition: the events of
    a processed command were committed in the same transaction as that offset. Pass `into` to
    check a topic chunk by chunk, adding to one result. `namespace`: the topic's, as the
    workers read it (a command naming another one does not parse).
    """
    result = CommandCheck() if into is None else into
    for c in commands:
        reason = ""
        try:
            command: Any = parse_command(c.value, namespace)
        except InvalidCommand as exc:
            command, reason = None, exc.reason
        is_start = isinstance(command, StartExecution)
        if c.partition >= PARTITIONS:
            result.findings.append(
                Finding(UNSERVED_PARTITION, None if command is None else command.execution_id,
                        f"command on partition {c.partition} of cerebelum.commands, past the "
                        f"{PARTITIONS} the workers serve: it will never run",
                        c.partition, c.offset)
            )  # fmt: skip
            continue
        if c.offset >= committed.get(c.partition, 0):
            result.pending += 1
            result.pending_starts += is_start
            continue
        if (c.partition, c.offset) in dead_lettered:
            result.dead_lettered += 1
            continue
        if command is None:
            result.findings.append(
                Finding(MALFORMED_NOT_IN_DLQ, None,
                        f"processed command that does not parse ({reason}) is not in the DLQ",
                        c.partition, c.offset)
            )  # fmt: skip
            continue
        home = home_partition(command.execution_id, PARTITIONS)
        if c.partition != home:
            result.findings.append(
                Finding(WRONG_PARTITION, command.execution_id,
                        f"processed {type(command).__name__} on partition {c.partition}, not in "
                        f"the DLQ; the id's home partition is {home}", c.partition, c.offset)
            )  # fmt: skip
        if is_start:
            result.starts += 1
            if command.execution_id not in started:
                result.findings.append(
                    Finding(LOST_START, command.execution_id,
                            f"processed StartExecution of {command.workflow!r} has no "
                            "ExecutionStarted and is not in the DLQ", c.partition, c.offset)
                )  # fmt: skip
    return result


class KafkaHistory(NamedTuple):
    """What PostgreSQL is compared with: one execution's history as Kafka holds it."""

    versions: int  # distinct versions
    last_version: int
    complete: bool  # read from version 1 (not cut by --since-ms)


def check_database(
    kafka: Mapping[str, KafkaHistory],
    stored_events: Mapping[str, tuple[int, int]],
    stored_last: Mapping[str, int],
) -> list[Finding]:
    """Compare each history with PostgreSQL: events rows (count, max version) and the
    executions row's last_version. Pass only executions the mirror has gone past."""
    findings = []
    for eid, h in kafka.items():
        count, max_version = stored_events.get(eid, (0, 0))
        problems = []
        if h.complete and count != h.versions:
            problems.append(f"{count} events rows, Kafka has {h.versions} versions")
        if max_version != h.last_version:
            problems.append(f"max stored version {max_version}, Kafka's is {h.last_version}")
        last = stored_last.get(eid)
        if last != h.last_version:
            problems.append(f"executions.last_version is {last}, Kafka's is {h.last_version}")
        if problems:
            findings.append(Finding(DATABASE_MISMATCH, eid, "; ".join(problems)))
    return findings


@dataclass(slots=True)
class Report:
    """What one verification read, found and could not check."""

    executions: int = 0
    events: int = 0
    commands: CommandCheck = field(default_factory=CommandCheck)
    compared: int = 0  # executions compared with PostgreSQL
    not_mirrored: int = 0  # executions with events past the mirror's position: not compared
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def by_kind(self) -> dict[str, int]:
        """Findings per kind, most frequent first."""
        return dict(Counter(f.kind for f in self.findings).most_common())

    def as_dict(self, examples: int) -> dict[str, Any]:
        c = self.commands
        return {
            "ok": not self.findings,
            "executions": self.executions,
            "events": self.events,
            "start_commands_checked": c.starts,
            "pending_commands": c.pending,
            "pending_start_commands": c.pending_starts,
            "dead_lettered": c.dead_lettered,
            "compared_with_database": self.compared,
            "not_yet_mirrored": self.not_mirrored,
            "findings_by_kind": self.by_kind(),
            "findings": [f.as_dict() for f in self.findings[:examples]],
            "notes": self.notes,
        }
