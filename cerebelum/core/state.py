"""The state of one execution: what folding its events from nothing gives."""

from __future__ import annotations

from typing import Any

RUNNING = "running"
SLEEPING = "sleeping"
WAITING = "waiting"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
# Held: no definition of its version on the worker that owns it (decisions.md §6). Live.
BLOCKED = "blocked"
# Waiting for a permit of a concurrency or rate limit (decisions.md §20). Live.
QUEUED = "queued"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
# Every status an execution can have, live first (API enums, the CLI, the dashboard).
STATUSES = (RUNNING, SLEEPING, WAITING, QUEUED, BLOCKED, COMPLETED, FAILED, CANCELLED)


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
        "blocked",
        "pending",
        "children",
        "parent",
        "limiter",
        "awaiting",
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
        # While blocked: {"waiting_for", "versions_here", "reason", "status" (the one it had)}.
        self.blocked: dict[str, Any] | None = None
        # Steps whose run returned ctx.pending(): completed from outside (CompleteStep) ->
        # the token a completion must carry (their StepScheduled's version). Not in `running`:
        # nothing is re-run for them when the partition changes owner.
        self.pending: dict[str, int] = {}
        # Child nodes waiting for their child executions: node name -> {"ids": [child ids],
        # "done": [bool per child], "outputs": [output per child]} (decisions.md §18).
        self.children: dict[str, dict[str, Any]] = {}
        # Of a child execution: {"execution_id", "step", "index"} of the parent node waiting
        # for it, told of its end by a ChildEnded command.
        self.parent: dict[str, Any] | None = None
        # Of a workflow with a concurrency limit: the limiter it was queued on (and holds a
        # permit of once admitted), told when it ends (decisions.md §20).
        self.limiter: str | None = None
        # Runs of rate-limited steps waiting for their permit: step -> [token, limiter]. In
        # `running` too, but not re-run when the partition changes owner (nothing ran yet).
        self.awaiting: dict[str, list[Any]] = {}

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
        ex.pending = dict(self.pending)
        ex.awaiting = dict(self.awaiting)
        ex.children = {
            name: {"ids": c["ids"], "done": list(c["done"]), "outputs": list(c["outputs"])}
            for name, c in self.children.items()
        }
        return ex

    def to_record(self) -> dict[str, Any]:
        """The snapshot written to cerebelum.state (the restore source). `traceparent` and
        `blocked` only when there is one: most executions have none, and every transition
        writes this."""
        record = {name: getattr(self, name) for name in _RECORD_FIELDS}
        if self.traceparent is not None:
            record["traceparent"] = self.traceparent
        if self.blocked is not None:  # rare: absent otherwise, like traceparent
            record["blocked"] = self.blocked
        if self.pending:  # rare too
            record["pending"] = self.pending
        if self.children:
            record["children"] = self.children
        if self.parent is not None:
            record["parent"] = self.parent
        if self.limiter is not None:
            record["limiter"] = self.limiter
        if self.awaiting:
            record["awaiting"] = self.awaiting
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
    if name
    not in (
        "results",
        "attempts",
        "running",
        "timers",
        "signals",
        "redispatches",
        "pending",
        "children",
        "awaiting",
    )
)

_RECORD_FIELDS = tuple(
    name
    for name in Execution.__slots__
    if name
    not in ("traceparent", "blocked", "pending", "children", "parent", "limiter", "awaiting")
)

_TERMINAL_FIELDS = (
    "id",
    "workflow",
    "workflow_version",
    "status",
    "version",
    "started_at",
    "updated_at",
)
