"""The state of one execution: what folding its events from nothing gives."""

from __future__ import annotations

from typing import Any

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
TERMINAL = frozenset({COMPLETED, FAILED})


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
        "attempt",
        "version",
        "output",
        "error",
        "started_at",
        "updated_at",
    )

    def __init__(self, execution_id: str) -> None:
        self.id = execution_id
        self.workflow = ""
        self.workflow_version = ""
        self.status = RUNNING
        self.inputs: Any = None
        self.results: dict[str, Any] = {}
        # Index into the workflow's steps of the step scheduled now (-1: none yet).
        self.cursor = -1
        self.attempt = 0
        self.version = 0
        self.output: Any = None
        self.error: dict[str, Any] | None = None
        self.started_at = 0
        self.updated_at = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_record(self) -> dict[str, Any]:
        """The snapshot written to cerebelum.state (the restore source)."""
        return {name: getattr(self, name) for name in self.__slots__}

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
