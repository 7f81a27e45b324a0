"""Deciding a batch: inputs of any owned partitions in, what one transaction writes out.

No Kafka and no asyncio here: the worker hands `decide_batch` the inputs it has queued and
commits the records and offsets the returned Batch holds, then installs its states and carries
out its effects. The partitions' committed states are never touched while deciding (decide
works on copies; the batch keeps the new states aside), so a transaction that fails changes
nothing and its inputs can simply be decided again.

What an input can do:
- a command from Kafka that cannot be read, is not on its execution's home partition (the
  record key must be the execution id, and the partition murmur2(id) % partitions), or that
  the state machine refuses, becomes a DLQ record with the reason (DESIGN.md invariants 7, 8);
- a bug (decide raising anything else) costs that one input, never the batch: a command goes
  to the DLQ as an internal error; a step outcome, timer or recovery fails its execution with
  an InternalError, so the execution ends loudly instead of hanging;
- a state that grew past MAX_SNAPSHOT_BYTES, or cannot be encoded, fails its execution.

The batch also tallies what it records, for the worker's metrics once it is committed: the
counted event types by workflow (and step), and its dead letters by kind of reason (a bounded
set of labels, unlike the reasons themselves): `invalid` (cannot be read), `too_large`,
`off_home` (wrong key or partition), `unknown_workflow`, `refused` (a signal or cancel for an
execution that does not exist or has ended), `internal_error`, and, from the worker,
`unrecordable` (Kafka refused to record it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeAlias

import orjson

from cerebelum.constants import (
    DEFAULT_NAMES,
    HEADER_DLQ_EXECUTION_ID,
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE_OFFSET,
    HEADER_DLQ_SOURCE_PARTITION,
    HEADER_DLQ_SOURCE_TOPIC,
    HEADER_STATE_RECOVERY,
    HEADER_STATE_WORKFLOW,
    HEADER_STATE_WRITER,
    Names,
)
from cerebelum.core.commands import (
    FailExecution,
    Recover,
    StartExecution,
    StepOutcome,
    TimerDue,
    child_ended_command,
    parse_command,
)
from cerebelum.core.events import error_info
from cerebelum.core.ids import home_partition
from cerebelum.core.machine import Effect, SendCommand, decide
from cerebelum.core.state import TERMINAL, Execution
from cerebelum.core.workflow import Registry
from cerebelum.errors import InvalidCommand, LimitExceeded, UnknownWorkflow
from cerebelum.telemetry.metrics import Tally, count_events
from cerebelum.worker.partition import PartitionState
from cerebelum.worker.restore import FINISHED, RUNNING, recovery_header, workflow_header

log = logging.getLogger(__name__)

# A live execution's snapshot (inputs + every result so far) larger than this fails the
# execution: the topics accept records up to 4 MiB (topics/topics.json), and restore time and
# memory grow with it. Each input and result is capped at 256 KiB on its own.
MAX_SNAPSHOT_BYTES = 2 * 1024 * 1024


class CommandRecord(NamedTuple):
    """A record of cerebelum.commands, as the consumer hands it over."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


Input: TypeAlias = CommandRecord | StepOutcome | TimerDue | Recover | FailExecution
Headers: TypeAlias = list[tuple[str, str | bytes | None]]


class Record(NamedTuple):
    """One record a transaction writes."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes
    headers: Headers | None


@dataclass(slots=True)
class Batch:
    """The decisions for some inputs: what to write, and what to do once it is committed."""

    inputs: list[tuple[PartitionState, Input]]
    # The worker's namespace: the topics its records go to.
    names: Names = DEFAULT_NAMES
    records: list[Record] = field(default_factory=list)
    # Partition -> the next command offset, for every partition the transaction writes for
    # or reads commands of (the offset commit is what carries the group's generation check).
    offsets: dict[int, int] = field(default_factory=dict)
    # The new committed form of each changed execution (decoded if running, else its snapshot).
    installs: list[tuple[PartitionState, str, Execution | bytes]] = field(default_factory=list)
    effects: list[tuple[PartitionState, Effect]] = field(default_factory=list)
    dead_letters: dict[str, int] = field(default_factory=dict)  # kind of reason -> how many
    recorded: Tally = field(default_factory=dict)  # counted events (telemetry.metrics)
    partitions: dict[int, PartitionState] = field(default_factory=dict)
    # Executions this batch ends (with their partition), for their trace span once committed.
    ended: list[tuple[int, Execution]] = field(default_factory=list)

    @property
    def needs_transaction(self) -> bool:
        return bool(self.records) or any(
            offset != self.partitions[p].committed for p, offset in self.offsets.items()
        )


def decide_batch(
    inputs: list[tuple[PartitionState, Input]],
    registry: Registry,
    now: int,
    partitions: int,
    writer: bytes,
    names: Names = DEFAULT_NAMES,
) -> Batch:
    """Decide `inputs` in order (they may name any owned partition) into one Batch. `writer`,
    the worker's transactional id, goes on each snapshot (a new owner fences it if it finds
    a transaction of it left open). `names`: the worker's namespace; a command naming another
    is dead-lettered."""
    batch = Batch(inputs, names)
    working: dict[tuple[int, str], tuple[PartitionState, Execution]] = {}
    dumps = orjson.dumps
    for ps, item in inputs:
        p = ps.partition
        batch.partitions[p] = ps
        if isinstance(item, CommandRecord):
            batch.offsets[p] = item.offset + 1
            try:
                command: Any = parse_command(item.value, names.namespace)
            except InvalidCommand as exc:
                _dead_letter(batch, item, exc.reason, exc.execution_id, _kind(exc, "invalid"))
                continue
            off_home = _home_problem(item, command.execution_id, partitions)
            if off_home is not None:
                _dead_letter(batch, item, off_home, command.execution_id, "off_home")
                continue
        else:
            command = item
        key = (p, command.execution_id)
        current = working[key][1] if key in working else ps.load(command.execution_id)
        try:
            state, events, effects = decide(current, command, now, registry)
            encoded = [dumps(e) for e in events]
        except InvalidCommand as exc:
            if isinstance(item, CommandRecord):
                kind = _kind(exc, "refused")
                _dead_letter(batch, item, exc.reason, command.execution_id, kind)
                if isinstance(command, StartExecution) and command.parent is not None:
                    _child_refused(batch, command, exc.reason, partitions)
            continue
        except Exception as exc:  # a bug costs this input, never the batch
            log.exception(
                "partition %d: deciding %r failed", p, command,
                extra={"partition": p, "execution_id": command.execution_id},
            )  # fmt: skip
            reason = f"internal error: {type(exc).__name__}: {exc}"
            if isinstance(item, CommandRecord):
                _dead_letter(batch, item, reason, command.execution_id, "internal_error")
                continue
            if current is None:
                continue
            state, events, effects = _fail(current, "InternalError", reason, now, registry)
            encoded = [dumps(e) for e in events]
        if events and state is not None:
            working[key] = (ps, state)
            eid = state.id.encode()
            batch.records.extend(Record(names.events, p, eid, v, None) for v in encoded)
            count_events(batch.recorded, events, state.workflow)
        batch.effects.extend((ps, effect) for effect in effects)
    for ps, state in working.values():
        _snapshot(batch, ps, state, now, registry, writer)
    _send_commands(batch, partitions)
    for p, ps in batch.partitions.items():
        batch.offsets.setdefault(p, ps.committed)
    return batch


def _send_commands(batch: Batch, partitions: int) -> None:
    """Commands decided for other executions (children started or cancelled, a parent told of
    its child's end) become records of this transaction, each on its target's home partition."""
    sent = [e for _, e in batch.effects if isinstance(e, SendCommand)]
    if not sent:
        return
    batch.effects = [(ps, e) for ps, e in batch.effects if not isinstance(e, SendCommand)]
    for e in sent:
        target = e.execution_id
        home = home_partition(target, partitions)
        batch.records.append(Record(batch.names.commands, home, target.encode(), e.value, None))


def _child_refused(batch: Batch, start: StartExecution, reason: str, partitions: int) -> None:
    """A child's start was dead-lettered (say, no worker here has its workflow): its parent
    must hear it failed, or it would wait for ever."""
    assert start.parent is not None
    error = error_info("StartRefused", reason, types=["StartRefused"])
    value = child_ended_command(start.parent, start.execution_id, "failed", None, error)
    parent = start.parent["execution_id"]
    home = home_partition(parent, partitions)
    batch.records.append(Record(batch.names.commands, home, parent.encode(), value, None))


def _home_problem(record: CommandRecord, execution_id: str, partitions: int) -> str | None:
    """Why the command is not at home, or None: a command must be keyed by its execution id
    and sit on the id's home partition."""
    if record.key != execution_id.encode():
        got = "no key" if record.key is None else f"key {record.key[:100]!r}"
        return f"the record has {got}; a command's key must be its execution_id"
    home = home_partition(execution_id, partitions)
    if record.partition != home:
        return (
            f"the record is on partition {record.partition}, but execution {execution_id!r} "
            f"lives on partition {home} (murmur2 of the key, as Kafka's default partitioner)"
        )
    return None


def _kind(exc: InvalidCommand, otherwise: str) -> str:
    """The kind of a dead letter's reason (a metric's label)."""
    if isinstance(exc, UnknownWorkflow):
        return "unknown_workflow"
    if isinstance(exc, LimitExceeded):
        return "too_large"
    return otherwise


def _snapshot(
    batch: Batch,
    ps: PartitionState,
    state: Execution,
    now: int,
    registry: Registry,
    writer: bytes,
) -> None:
    """Encode a changed execution's snapshot (failing it if too large or not encodable)."""
    problem = None
    try:
        value = orjson.dumps(state.snapshot())
        if len(value) > MAX_SNAPSHOT_BYTES:
            problem = (
                "LimitExceeded",
                f"execution state is {len(value)} bytes, over the limit of {MAX_SNAPSHOT_BYTES}:"
                " keep step results and inputs small (store blobs elsewhere)",
            )
    except TypeError as exc:
        problem = ("InternalError", f"execution state cannot be encoded: {exc}")
    if problem is not None:
        state, events, _ = _fail(state, *problem, now, registry)
        # It ends here: what the batch meant it to do next (run a step, arm a timer) is moot.
        batch.effects = [(p, e) for p, e in batch.effects if e.execution_id != state.id]
        key = state.id.encode()
        batch.records.extend(
            Record(batch.names.events, ps.partition, key, orjson.dumps(e), None) for e in events
        )
        value = orjson.dumps(state.snapshot())
        count_events(batch.recorded, events, state.workflow)
    recovery = recovery_header(state)
    headers: Headers = [(HEADER_STATE_RECOVERY, recovery), (HEADER_STATE_WRITER, writer)]
    if recovery != FINISHED:  # restore finds executions by version (decisions.md §6)
        headers.append((HEADER_STATE_WORKFLOW, workflow_header(state)))
    batch.records.append(Record(batch.names.state, ps.partition, state.id.encode(), value, headers))
    if recovery[:1] == RUNNING:
        batch.installs.append((ps, state.id, state))
    else:
        if state.status in TERMINAL:
            batch.ended.append((ps.partition, state))
        # Finished or parked (sleeping, waiting for a signal or a retry): keep the encoded
        # snapshot until an input needs it. Copied: orjson's bytes keep their ~8 KB write
        # buffer allocated behind them (measured: 4,097 -> 131 B).
        batch.installs.append((ps, state.id, bytes(memoryview(value))))


def _fail(
    state: Execution, error_type: str, message: str, now: int, registry: Registry
) -> tuple[Execution, list[dict[str, Any]], list[Effect]]:
    new_state, events, effects = decide(
        state, FailExecution(state.id, error_type, message), now, registry
    )
    assert new_state is not None
    return new_state, events, effects


def _dead_letter(
    batch: Batch, record: CommandRecord, reason: str, execution_id: str | None, kind: str
) -> None:
    log.warning(
        "partition %d offset %d: command sent to %s: %s",
        record.partition, record.offset, batch.names.dlq, reason,
        extra={"partition": record.partition, "execution_id": execution_id},
    )  # fmt: skip
    headers = dead_letter_headers(record, reason, execution_id, batch.names)
    value = record.value if record.value is not None else b""
    batch.records.append(Record(batch.names.dlq, record.partition, record.key, value, headers))
    batch.dead_letters[kind] = batch.dead_letters.get(kind, 0) + 1


def dead_letter_headers(
    record: CommandRecord, reason: str, execution_id: str | None, names: Names
) -> Headers:
    """The headers of a DLQ record: why, where the command came from, whose it was."""
    headers: Headers = [
        (HEADER_DLQ_REASON, reason.encode()),
        (HEADER_DLQ_SOURCE_TOPIC, names.commands.encode()),
        (HEADER_DLQ_SOURCE_PARTITION, str(record.partition).encode()),
        (HEADER_DLQ_SOURCE_OFFSET, str(record.offset).encode()),
    ]
    if execution_id is not None:
        headers.append((HEADER_DLQ_EXECUTION_ID, execution_id.encode()))
    return headers
