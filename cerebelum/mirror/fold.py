"""Pure mirror logic: Kafka records → validated event rows → one `executions` row per execution.

No Kafka or asyncpg here, so the unit tests exercise all of it. What each event type does to its
execution's row is the table `EFFECTS`: a new event type is one line there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from cerebelum.core import events as ev
from cerebelum.core.commands import MAX_EXECUTION_ID_LENGTH
from cerebelum.core.state import BLOCKED, QUEUED, RUNNING, STATUSES, TERMINAL

LIVE_STATUSES = frozenset(STATUSES) - TERMINAL

# Where a column's value comes from: a field of the event (its name), the event's own `at`
# (AT), nothing (CLEAR: the column becomes NULL), or a function of the whole event.
AT = object()
CLEAR = object()
Source = str | object | Callable[[dict[str, Any]], Any]


class Effect(NamedTuple):
    """What one event type does to its execution's row."""

    # The status after this event; None leaves it as it was; a dict picks by the event's
    # "purpose" field (a sleep timer means sleeping, a signal timeout leaves "waiting"); a
    # function takes it from the event (a resumed execution gets back the status it had).
    status: str | dict[str, str] | Callable[[dict[str, Any]], Any] | None
    columns: tuple[tuple[str, Source], ...] = ()  # (column, where its value comes from)


def _cancelled_error(event: dict[str, Any]) -> dict[str, Any]:
    """The core's one shape for a cancelled execution's error (the event carries the reason)."""
    reason = event.get("reason")
    return ev.cancelled_error(reason if isinstance(reason, str) else "")


def _resumed_status(event: dict[str, Any]) -> str | None:
    status = event.get("status")
    return status if isinstance(status, str) and status in LIVE_STATUSES else RUNNING


def _scheduled_status(event: dict[str, Any]) -> str:
    """A rate-limited run waits for its permit (decisions.md §20)."""
    return QUEUED if "limiter" in event else RUNNING


def _admitted_status(event: dict[str, Any]) -> str:
    """A permit that came while the execution was blocked leaves it blocked."""
    return BLOCKED if event.get("blocked") else RUNNING


# The one table to extend for a new event type. Types not listed only bump last_version.
EFFECTS: dict[str, Effect] = {
    ev.EXECUTION_STARTED: Effect(
        "running",
        (
            ("workflow", "workflow"),
            ("workflow_version", "workflow_version"),
            ("inputs", "inputs"),
            ("started_at", AT),
        ),
    ),
    ev.STEP_SCHEDULED: Effect(_scheduled_status, (("current_step", "step"),)),
    ev.STEP_RESCHEDULED: Effect("running", (("current_step", "step"),)),
    ev.STEP_FAILED: Effect(None, (("error", "error"),)),
    # A completed execution has no error, whatever an earlier attempt recorded.
    ev.EXECUTION_COMPLETED: Effect(
        "completed", (("output", "output"), ("error", CLEAR), ("finished_at", AT))
    ),
    ev.EXECUTION_FAILED: Effect("failed", (("error", "error"), ("finished_at", AT))),
    ev.EXECUTION_CANCELLED: Effect("cancelled", (("error", _cancelled_error), ("finished_at", AT))),
    ev.TIMER_STARTED: Effect({"sleep": "sleeping"}, (("current_step", "step"),)),
    ev.SIGNAL_AWAITED: Effect("waiting", (("current_step", "step"),)),
    ev.APPROVAL_REQUESTED: Effect("waiting", (("current_step", "step"),)),
    ev.STEP_RETRY_SCHEDULED: Effect("retrying"),
    # Handed to another system (ctx.pending): waiting for its CompleteStep.
    ev.STEP_PENDING: Effect("waiting", (("current_step", "step"),)),
    # Waiting for child executions (decisions.md §18); each child's end only bumps the version.
    ev.CHILDREN_STARTED: Effect("waiting", (("current_step", "step"),)),
    ev.CHILD_COMPLETED: Effect(None),
    # A schedule (decisions.md §19): running while active, waiting while paused.
    ev.SCHEDULE_FIRED: Effect(None),
    ev.SCHEDULE_SKIPPED: Effect(None),
    ev.SCHEDULE_RUN_ENDED: Effect(None),
    ev.SCHEDULE_PAUSED: Effect("waiting"),
    ev.SCHEDULE_RESUMED: Effect("running"),
    # Neutral: they only bump last_version (the status follows from the next event).
    ev.STEP_COMPLETED: Effect(None),
    ev.TIMER_FIRED: Effect(None),
    ev.SIGNAL_RECEIVED: Effect(None),
    ev.DIVERGE_TAKEN: Effect(None),
    ev.BRANCH_TAKEN: Effect(None),
    ev.JUMP_TAKEN: Effect(None),
    # Versions (decisions.md §6): held, resumed, moved to another version.
    ev.EXECUTION_BLOCKED: Effect(BLOCKED),
    ev.EXECUTION_RESUMED: Effect(_resumed_status, (("workflow_version", "workflow_version"),)),
    ev.EXECUTION_MIGRATED: Effect(None, (("workflow_version", "to"),)),
    # Concurrency and rate limits (decisions.md §20); a limiter's own events are neutral.
    ev.EXECUTION_QUEUED: Effect(QUEUED),
    ev.EXECUTION_ADMITTED: Effect(_admitted_status),
    ev.STEP_ADMITTED: Effect(_admitted_status, (("current_step", "step"),)),
    ev.LIMIT_SET: Effect(None),
    ev.PERMIT_GRANTED: Effect(None),
    ev.PERMIT_QUEUED: Effect(None),
    ev.PERMIT_RELEASED: Effect(None),
    ev.PERMIT_DENIED: Effect(None),
}

TEXT_COLUMNS = ("workflow", "workflow_version", "status", "current_step")
JSON_COLUMNS = ("inputs", "output", "error")
TIME_COLUMNS = ("started_at", "finished_at")

_MAX_INT4 = 2**31 - 1
_MAX_INT2 = 2**15 - 1
# 9999-12-31T23:59:59.999Z: past it Python's datetime (and common sense) give out.
MAX_AT_MS = 253_402_300_799_999
# An event type is a short identifier; the bound keeps garbage out of a text column.
MAX_TYPE_LENGTH = 200


class MalformedEvent(ValueError):
    """A record on cerebelum.events that cannot be mirrored; it is counted and skipped."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EventRow(NamedTuple):
    """One validated event, as the `events` table stores it (plus the decoded event)."""

    execution_id: str
    version: int
    type: str
    schema: int
    at: int  # epoch ms
    data: str  # the event's JSON text, stored as jsonb
    kafka_partition: int
    kafka_offset: int
    event: dict[str, Any]


@dataclass(slots=True)
class ExecutionRow:
    """The columns one batch sets on an execution's row; None means "keep what is there",
    except `error` in a row whose `finished_at` is set: the batch that finishes an execution
    states its final error, and None there means none (a completion clears it)."""

    execution_id: str
    last_version: int = 0
    updated_at: int = 0  # epoch ms
    workflow: str | None = None
    workflow_version: str | None = None
    status: str | None = None
    current_step: str | None = None
    inputs: str | None = None  # JSON text
    output: str | None = None  # JSON text
    error: str | None = None  # JSON text
    started_at: int | None = None  # epoch ms
    finished_at: int | None = None  # epoch ms
    kafka_partition: int | None = None  # where its events are: who owns it (GET /cluster)


# --- decoding ---------------------------------------------------------------------------------


def decode_event(value: bytes | None, partition: int, offset: int) -> EventRow:
    """Validate one record value from cerebelum.events, or raise MalformedEvent.

    Everything PostgreSQL would refuse is refused here, so one bad record cannot fail the
    batch it sits in: the envelope's types and ranges, and NUL characters (jsonb and text
    reject them; they are replaced by U+FFFD in the stored data).
    """
    if value is None:
        raise MalformedEvent("empty record value")
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"not valid JSON: {exc}") from None
    if not isinstance(event, dict):
        raise MalformedEvent("not a JSON object")
    execution_id = event.get("execution_id")
    if not isinstance(execution_id, str) or not 0 < len(execution_id) <= MAX_EXECUTION_ID_LENGTH:
        raise MalformedEvent(
            f"execution_id must be a string of 1..{MAX_EXECUTION_ID_LENGTH} characters"
        )
    version = event.get("version")
    if type(version) is not int or not 1 <= version <= _MAX_INT4:
        raise MalformedEvent("version must be an integer from 1 to 2^31-1")
    kind = event.get("type")
    if not isinstance(kind, str) or not 0 < len(kind) <= MAX_TYPE_LENGTH:
        raise MalformedEvent(f"type must be a string of 1..{MAX_TYPE_LENGTH} characters")
    schema = event.get("schema")
    if type(schema) is not int or not 0 <= schema <= _MAX_INT2:
        raise MalformedEvent("schema must be a small non-negative integer")
    at = event.get("at")
    if type(at) is not int or not 0 <= at <= MAX_AT_MS:
        raise MalformedEvent("at must be epoch milliseconds (an integer)")
    if b"\\u0000" in value:
        if "\x00" in execution_id or "\x00" in kind:
            raise MalformedEvent("NUL character in execution_id or type")
        event = _without_nul(event)
        data = orjson.dumps(event).decode()
    else:
        data = value.decode()
    return EventRow(execution_id, version, kind, schema, at, data, partition, offset, event)


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def sort_and_dedupe(rows: Iterable[EventRow]) -> list[EventRow]:
    """Rows in (execution_id, version) order, the first record of each pair kept.

    The order is the lock order of every writer, so concurrent mirrors cannot deadlock, and
    it is the order `fold` needs. Kafka carries a pair twice only when a producer misbehaved.
    """
    ordered = sorted(rows, key=lambda r: (r.execution_id, r.version, r.kafka_offset))
    unique: list[EventRow] = []
    last: tuple[str, int] | None = None
    for row in ordered:
        key = (row.execution_id, row.version)
        if key != last:
            unique.append(row)
            last = key
    return unique


# --- folding ----------------------------------------------------------------------------------


def fold(rows: Sequence[EventRow]) -> list[ExecutionRow]:
    """One ExecutionRow per execution in `rows` (which are sorted by execution_id, version).

    Each row holds what this batch's events say: the latest status and values, None where no
    event of the batch spoke. The upsert keeps the stored value for a None.
    """
    result: list[ExecutionRow] = []
    current: ExecutionRow | None = None
    for row in rows:
        if current is None or current.execution_id != row.execution_id:
            current = ExecutionRow(row.execution_id)
            result.append(current)
        apply_event(current, row)
    return result


def apply_event(execution: ExecutionRow, row: EventRow) -> None:
    """Fold one event into the row, as `EFFECTS` says."""
    if row.version > execution.last_version:
        execution.last_version = row.version
        execution.updated_at = row.at
    execution.kafka_partition = row.kafka_partition
    effect = EFFECTS.get(row.type)
    if effect is None:
        return
    event = row.event
    status: Any = effect.status
    if isinstance(status, dict):
        status = status.get(event.get("purpose", ""))
    elif callable(status):
        status = status(event)
    if status is not None:
        execution.status = status
    for column, source in effect.columns:
        if source is AT:
            setattr(execution, column, row.at)
        elif source is CLEAR:
            setattr(execution, column, None)
        elif callable(source):
            setattr(execution, column, _column_value(column, source(event)))
        elif isinstance(source, str) and source in event:
            setattr(execution, column, _column_value(column, event[source]))


def _column_value(column: str, value: Any) -> Any:
    if column in JSON_COLUMNS:
        return orjson.dumps(value).decode()
    if value is None:
        return None
    return value if isinstance(value, str) else orjson.dumps(value).decode()
