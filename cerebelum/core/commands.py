"""Inputs to the state machine: commands from Kafka and outcomes reported by the worker.

Wire format of a command on cerebelum.commands (documented in docs/start-command.md):
key = execution_id (UTF-8; the record must sit on the id's home partition, see core/ids.py),
value = a JSON object

    {"type": "StartExecution", "execution_id": "...", "workflow": "...", "inputs": {...},
     "traceparent": "00-<trace id>-<span id>-01"}    (traceparent optional, W3C trace context)
    {"type": "SendSignal", "execution_id": "...", "signal": "approval", "payload": {...}}
    {"type": "CancelExecution", "execution_id": "...", "reason": "..."}
"""

from __future__ import annotations

import re
from typing import Any, cast

import orjson

from cerebelum.constants import CMD_CANCEL, CMD_SIGNAL, CMD_START, COMMAND_SCHEMA
from cerebelum.core.ids import MAX_ID_LENGTH, id_problem
from cerebelum.errors import InvalidCommand, LimitExceeded

# A command larger than this is refused: state snapshots carry the inputs, and Kafka's default
# max.message.bytes is 1 MiB, so inputs must leave room for step results beside them.
MAX_COMMAND_BYTES = 256 * 1024
MAX_EXECUTION_ID_LENGTH = MAX_ID_LENGTH


# A W3C trace context `traceparent` (https://www.w3.org/TR/trace-context/#traceparent-header):
# version, trace id, parent span id, flags, in lowercase hex. Versions after 00 may append
# fields, which are dropped; version ff is invalid.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def parse_traceparent(value: Any) -> str | None:
    """`value` as a version-00 traceparent, or None if it is not a valid one (as the W3C
    recommendation asks, an invalid trace context is dropped, never an error)."""
    if not isinstance(value, str) or len(value) > 256:
        return None
    m = _TRACEPARENT.fullmatch(value)
    if m is None:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE:
        return None
    if span_id == _ZERO_SPAN:
        return None
    return f"00-{trace_id}-{span_id}-{flags}"


class StartExecution:
    """`traceparent`: the caller's W3C trace context, if it gave a valid one; the execution's
    spans join the caller's trace (cerebelum.telemetry.tracing)."""

    __slots__ = ("execution_id", "workflow", "inputs", "traceparent")

    def __init__(
        self, execution_id: str, workflow: str, inputs: Any, traceparent: str | None = None
    ) -> None:
        self.execution_id = execution_id
        self.workflow = workflow
        self.inputs = inputs
        self.traceparent = traceparent


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
        traceparent = parse_traceparent(body["traceparent"]) if "traceparent" in body else None
        return StartExecution(execution_id, workflow, body.get("inputs", {}), traceparent)
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


def start_command(
    execution_id: str, workflow: str, inputs: Any, traceparent: str | None = None
) -> bytes:
    """Encode a StartExecution command's value (the key is the execution id)."""
    command = {
        "type": CMD_START,
        "schema": COMMAND_SCHEMA,
        "execution_id": execution_id,
        "workflow": workflow,
        "inputs": inputs,
    }
    if traceparent is not None:
        command["traceparent"] = traceparent
    return orjson.dumps(command)


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
