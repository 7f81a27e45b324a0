"""Cerebelum's errors, all under one root.

    CerebelumError
    ├── WorkflowDefinitionError   a workflow or step is declared wrongly (at import time)
    ├── UnknownWorkflow           a command names a workflow this worker does not have
    ├── InvalidCommand            a command cannot be decoded or lacks fields
    ├── LimitExceeded             a payload or history is larger than allowed
    ├── ExecutionNotFound         a query names an execution that does not exist
    └── StepError                 raise from a step to fail it for good (no retry)

Errors a step raises for any other reason (ValueError, ...) are recorded as StepFailed with the
type name and message. The engine's own control-flow signals derive from BaseException so a
step's `except Exception` cannot swallow them.
"""

from __future__ import annotations


class CerebelumError(Exception):
    """Root of every error Cerebelum raises on purpose."""


class WorkflowDefinitionError(CerebelumError):
    def __init__(self, workflow: str, message: str) -> None:
        super().__init__(f"workflow {workflow!r}: {message}")
        self.workflow = workflow


class InvalidCommand(CerebelumError):
    """A command that cannot be decoded or lacks fields; it goes to the DLQ with this reason."""

    def __init__(self, reason: str, execution_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.execution_id = execution_id


class UnknownWorkflow(InvalidCommand):
    def __init__(self, workflow: str, execution_id: str | None = None) -> None:
        super().__init__(f"unknown workflow {workflow!r}", execution_id)
        self.workflow = workflow


class LimitExceeded(InvalidCommand):
    def __init__(self, what: str, size: int, limit: int, execution_id: str | None = None) -> None:
        super().__init__(f"{what} is {size} bytes, over the limit of {limit}", execution_id)
        self.size = size
        self.limit = limit


class ExecutionNotFound(CerebelumError):
    def __init__(self, execution_id: str) -> None:
        super().__init__(f"execution {execution_id!r} not found")
        self.execution_id = execution_id


class StepError(CerebelumError):
    """Raise from a step to fail it for good: no retry, whatever the retry policy says."""
