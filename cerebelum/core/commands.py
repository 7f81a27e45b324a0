"""Inputs to the state machine: commands from Kafka and outcomes reported by the worker.

Wire format of a command on cerebelum.commands (documented in docs/start-command.md):
key = execution_id (UTF-8; the record must sit on the id's home partition, see core/ids.py),
value = a JSON object

    {"type": "StartExecution", "execution_id": "...", "workflow": "...", "inputs": {...}}
    {"type": "SendSignal", "execution_id": "...", "signal": "approval", "payload": {...}}
    {"type": "CancelExecution", "execution_id": "...", "reason": "..."}
"""

from __future__ import annotations

from typing import Any, cast

import orjson

from cerebelum.constants import CMD_CANCEL, CMD_SIGNAL, CMD_START, COMMAND_SCHEMA
from cerebelum.core.ids import MAX_ID_LENGTH, id_problem
from cerebelum.errors import InvalidCommand, LimitExceeded

# A command larger than this is refused: state snapshots carry the inputs, and Kafka's default
# max.message.bytes is 1 MiB, so inputs must leave room for step results beside them.
MAX_COMMAND_BYTES = 256 * 1024
MAX_EXECUTION_ID_LENGTH = MAX_ID_LENGTH


class StartExecution:
    __slots__ = ("execution_id", "workflow", "inputs")

    def __init__(self, execution_id: str, workflow: str, inputs: Any) -> None:
        self.execution_id = execution_id
        self.workflow = workflow
        self.inputs = inputs


class StepOutcome:
    """What a step run returned or raised, reported back by the worker's step runner.
    `traceback`: the formatted traceback of what it raised, already bounded
    (core.events.traceback_text), recorded on its StepFailed event."""

    __slots__ = ("execution_id", "step", "token", "ok", "value", "error", "traceback")

    def __init__(
        self,
        execution_id: str,
        step: str,
        token: int,
        ok: bool,
        value: Any = None,
        error: dict[str, Any] | None = None,
        traceback: str | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.step = step
        self.token = token  # the StepScheduled version this run answers
        self.ok = ok
        self.value = value
        self.error = error
        self.traceback = traceback


class SendSignal:
    __slots__ = ("execution_id", "signal", "payload")

    def __init__(self, execution_id: str, signal: str, payload: Any) -> None:
        self.execution_id = execution_id
        self.signal = signal
        self.payload = payload


class CancelExecution:
    __slots__ = ("execution_id", "reason")

    def __init__(self, execution_id: str, reason: str) -> None:
        self.execution_id = execution_id
        self.reason = reason


class TimerDue:
    """A durable timer's time has come (from the worker's timer heap)."""

    __slots__ = ("execution_id", "timer_id")

    def __init__(self, execution_id: str, timer_id: str) -> None:
        self.execution_id = execution_id
        self.timer_id = timer_id


class FailExecution:
    """The worker found the execution breaking a limit only it can see (its snapshot's size)."""

    __slots__ = ("execution_id", "error_type", "message")

    def __init__(self, execution_id: str, error_type: str, message: str) -> None:
        self.execution_id = execution_id
        self.error_type = error_type
        self.message = message


class Recover:
    """A partition was restored: re-issue what the execution was doing (steps, timers)."""

    __slots__ = ("execution_id",)

    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id


Command = StartExecution | SendSignal | CancelExecution
Input = Command | StepOutcome | TimerDue | Recover | FailExecution


def parse_command(raw: bytes | None) -> Command:
    """Decode one record value from cerebelum.commands, or raise InvalidCommand with the reason."""
    if raw is None:
        raise InvalidCommand("empty record value")
    if len(raw) > MAX_COMMAND_BYTES:
        raise LimitExceeded("command", len(raw), MAX_COMMAND_BYTES)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidCommand(f"value is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidCommand("value must be a JSON object")
    execution_id = _name_field(body, "execution_id", None)
    schema = body.get("schema", COMMAND_SCHEMA)
    if not isinstance(schema, int) or schema > COMMAND_SCHEMA:
        raise InvalidCommand(f"unsupported command schema {schema!r}", execution_id)
    kind = body.get("type")
    if kind == CMD_START:
        workflow = _name_field(body, "workflow", execution_id)
        return StartExecution(execution_id, workflow, body.get("inputs", {}))
    if kind == CMD_SIGNAL:
        signal = _name_field(body, "signal", execution_id)
        return SendSignal(execution_id, signal, body.get("payload"))
    if kind == CMD_CANCEL:
        reason = body.get("reason", "cancelled")
        if not isinstance(reason, str):
            raise InvalidCommand("field 'reason' must be a string", execution_id)
        return CancelExecution(execution_id, reason)
    raise InvalidCommand(f"unknown command type {kind!r}", execution_id)


def _name_field(body: dict[str, Any], field: str, execution_id: str | None) -> str:
    """body[field], which must follow the id alphabet (cerebelum.core.ids)."""
    value = body.get(field)
    problem = id_problem(value, f"field {field!r}")
    if problem is not None:
        raise InvalidCommand(problem, execution_id)
    return cast(str, value)


def payload_size(payload: Any) -> int:
    """The bytes `payload` takes as JSON (as a command or a state snapshot carries it)."""
    return len(orjson.dumps(payload))


def start_command(execution_id: str, workflow: str, inputs: Any) -> bytes:
    """Encode a StartExecution command's value (the key is the execution id)."""
    return orjson.dumps(
        {
            "type": CMD_START,
            "schema": COMMAND_SCHEMA,
            "execution_id": execution_id,
            "workflow": workflow,
            "inputs": inputs,
        }
    )


def signal_command(execution_id: str, signal: str, payload: Any) -> bytes:
    return orjson.dumps(
        {
            "type": CMD_SIGNAL,
            "schema": COMMAND_SCHEMA,
            "execution_id": execution_id,
            "signal": signal,
            "payload": payload,
        }
    )


def cancel_command(execution_id: str, reason: str) -> bytes:
    return orjson.dumps(
        {
            "type": CMD_CANCEL,
            "schema": COMMAND_SCHEMA,
            "execution_id": execution_id,
            "reason": reason,
        }
    )
