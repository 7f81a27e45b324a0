"""Cerebelum's errors, all under one root.

    CerebelumError
    ├── WorkflowDefinitionError   a workflow or step is declared wrongly (at import time)
    ├── InvalidCommand            a command cannot be decoded or lacks fields (dead-lettered)
    │   ├── UnknownWorkflow       a command names a workflow this worker does not have
    │   └── LimitExceeded         a payload or history is larger than allowed
    ├── InvalidId                 an id or name outside the id alphabet, refused before
    │                             producing (also a ValueError)
    ├── CommandRejected           a worker dead-lettered the command a caller waits on
    ├── KafkaUnavailable          Kafka did not answer or acknowledge within the bound
    │   └── KafkaRefused          a broker answered but refused the TLS handshake or the
    │                             SASL authentication (no retry will help)
    ├── ExecutionNotFound         a query names an execution that does not exist
    ├── TopicMismatch             a topic exists with other settings than declared
    │                             (cerebelum.admin.topics)
    ├── ConfigurationError        a setting, or a file one names, is invalid or missing
    │                             (also a ValueError; e.g. the API's tokens file)
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


class InvalidId(CerebelumError, ValueError):
    """An execution id, workflow name or signal name outside the id alphabet (core/ids.py).

    The Client, the CLI and the API raise it before anything is produced: the worker would
    only dead-letter such a command.
    """

    def __init__(self, what: str, value: object, reason: str) -> None:
        super().__init__(reason)
        self.what = what  # "execution_id", "workflow" or "signal"
        self.value = value
        self.reason = reason


class CommandRejected(CerebelumError):
    """A worker dead-lettered the command a caller waits on: its execution will never run.

    `reason` is the DLQ record's `cerebelum.dlq.reason` header.
    """

    def __init__(self, execution_id: str, reason: str) -> None:
        super().__init__(f"the command for {execution_id} was refused: {reason}")
        self.execution_id = execution_id
        self.reason = reason


class KafkaUnavailable(CerebelumError):
    """Kafka did not answer (or acknowledge a command) within `timeout` seconds.

    A command that timed out may still have been written: retrying with the same execution id
    is safe (a start is idempotent by id).
    """

    def __init__(
        self, bootstrap: str, timeout: float, doing: str, cause: BaseException | None = None
    ) -> None:
        from cerebelum.security.redact import redact  # late: errors is imported everywhere

        detail = f" ({_describe(cause)})" if cause is not None else ""
        super().__init__(
            f"Kafka at {redact(bootstrap)} did not {doing} within {_seconds(timeout)} s{detail}"
        )
        self.bootstrap = bootstrap
        self.timeout = timeout
        self.doing = doing  # "answer", "allocate a producer id", "acknowledge the start of x"
        self.cause = cause


class KafkaRefused(KafkaUnavailable):
    """A broker was reached but refused the connection's TLS or SASL (`reason` says how)."""

    def __init__(self, bootstrap: str, timeout: float, doing: str, reason: str) -> None:
        super().__init__(bootstrap, timeout, doing)
        from cerebelum.security.redact import redact

        self.reason = reason
        self.args = (f"Kafka at {redact(bootstrap)} refused the connection: {reason}",)


def _seconds(timeout: float) -> str:
    """A bound as a person reads it: 15, 2, 0.5 (a bound partly spent, 1.98, reads as 2)."""
    return str(round(timeout)) if timeout >= 1 else f"{timeout:.1g}"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text and not text.startswith(name) else text or name


class ExecutionNotFound(CerebelumError):
    def __init__(self, execution_id: str) -> None:
        super().__init__(f"execution {execution_id!r} not found")
        self.execution_id = execution_id


class ConfigurationError(CerebelumError, ValueError):
    """A setting from the environment, or a file it names, is invalid or missing: the process
    refuses to start rather than run with a guess (e.g. an API with no way to authenticate)."""


class StepError(CerebelumError):
    """Raise from a step to fail it for good: no retry, whatever the retry policy says."""
