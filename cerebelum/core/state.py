"""The state of one execution: what folding its events from nothing gives."""

from __future__ import annotations

from typing import Any

RUNNING = "running"
SLEEPING = "sleeping"
WAITING = "waiting"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})


class Execution:
    """One execution's state. `apply` mutates it in place (the hot path allocates nothing else)."""

    __slots__ = (
        "id",
        "workflow",
        "workflow_version",
        "status",
        "inputs",
        "results",
        "cursor",
        "attempts",
        "running",
        "timers",
        "waiting",
        "signals",
        "redispatches",
        "iteration",
        "version",
        "output",
        "error",
        "started_at",
        "updated_at",
        "traceparent",
    )

    def __init__(self, execution_id: str) -> None:
        self.id = execution_id
        self.workflow = ""
        self.workflow_version = ""
        self.status = RUNNING
        self.inputs: Any = None
        self.results: dict[str, Any] = {}
        # Index of the current node in the workflow's timeline (-1: none entered yet).
        self.cursor = -1
        # The current node's steps not yet completed -> their current attempt number.
        self.attempts: dict[str, int] = {}
        # Of those, the ones dispatched and not yet reported -> the version of their
        # StepScheduled event (the token a report must carry; the rest wait for a retry timer).
        self.running: dict[str, int] = {}
        # Pending durable timers: timer_id -> {"fire_at", "purpose", "step"}.
        self.timers: dict[str, dict[str, Any]] = {}
        # The signal the current node waits for, if any.
        self.waiting: str | None = None
        # Signals received and not yet consumed by a wait: name -> payloads, oldest first.
        self.signals: dict[str, list[Any]] = {}
        # Steps of the current node that were in flight when their worker changed -> how many
        # times (kept across retries, so a step that crashed its worker stays isolated).
        self.redispatches: dict[str, int] = {}
        # back_to jumps taken so far (the loop guard counts these).
        self.iteration = 0
        self.version = 0
        self.output: Any = None
        self.error: dict[str, Any] | None = None
        self.started_at = 0
        self.updated_at = 0
        # The W3C trace context the execution was started with, if any (its spans' parent).
        self.traceparent: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def copy(self) -> Execution:
        """A copy that `apply` can change without touching this one: the containers `apply`
        mutates are copied; the values in them (results, payloads, timer dicts) never are
        mutated, so they are shared."""
        ex = Execution.__new__(Execution)
        for name in _SCALARS:
            setattr(ex, name, getattr(self, name))
        ex.results = dict(self.results)
        ex.attempts = dict(self.attempts)
        ex.running = dict(self.running)
        ex.timers = dict(self.timers)
        ex.signals = {name: list(queued) for name, queued in self.signals.items()}
        ex.redispatches = dict(self.redispatches)
        return ex

    def to_record(self) -> dict[str, Any]:
        """The snapshot written to cerebelum.state (the restore source). `traceparent` only
        when there is one: most executions have none, and every transition writes this."""
        record = {name: getattr(self, name) for name in _RECORD_FIELDS}
        if self.traceparent is not None:
            record["traceparent"] = self.traceparent
        return record

    def snapshot(self) -> dict[str, Any]:
        """What cerebelum.state keeps: all of a live execution; of a finished one only what
        recognises a repeated start (its inputs and results live on in the events)."""
        if self.status in TERMINAL:
            return {name: getattr(self, name) for name in _TERMINAL_FIELDS}
        return self.to_record()

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Execution:
        ex = cls(record["id"])
        for name in cls.__slots__:
            if name in record:
                setattr(ex, name, record[name])
        return ex

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Execution) and self.to_record() == other.to_record()

    def __repr__(self) -> str:
        return f"Execution({self.id!r}, {self.workflow!r}, {self.status}, v{self.version})"


# Fields holding immutable values (or values apply replaces rather than mutates).
_SCALARS = tuple(
    name
    for name in Execution.__slots__
    if name not in ("results", "attempts", "running", "timers", "signals", "redispatches")
)

_RECORD_FIELDS = tuple(name for name in Execution.__slots__ if name != "traceparent")

_TERMINAL_FIELDS = (
    "id",
    "workflow",
    "workflow_version",
    "status",
    "version",
    "started_at",
    "updated_at",
)
