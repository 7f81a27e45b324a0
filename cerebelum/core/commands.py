"""Inputs to the state machine: commands from Kafka and outcomes reported by the worker.

Wire format of a command on cerebelum.commands (documented in docs/start-command.md):
key = execution_id (UTF-8), value = a JSON object

    {"type": "StartExecution", "execution_id": "...", "workflow": "...", "inputs": {...}}
"""

from __future__ import annotations

from typing import Any

import orjson

from cerebelum.constants import CMD_START, COMMAND_SCHEMA
from cerebelum.errors import InvalidCommand, LimitExceeded

# A command larger than this is refused: state snapshots carry the inputs, and Kafka's default
# max.message.bytes is 1 MiB, so inputs must leave room for step results beside them.
MAX_COMMAND_BYTES = 256 * 1024
MAX_EXECUTION_ID_LENGTH = 200


class StartExecution:
    __slots__ = ("execution_id", "workflow", "inputs")

    def __init__(self, execution_id: str, workflow: str, inputs: Any) -> None:
        self.execution_id = execution_id
        self.workflow = workflow
        self.inputs = inputs


class StepOutcome:
    """What a step run returned or raised, reported back by the worker's step runner."""

    __slots__ = ("execution_id", "step", "attempt", "ok", "value", "error")

    def __init__(
        self,
        execution_id: str,
        step: str,
        attempt: int,
        ok: bool,
        value: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.step = step
        self.attempt = attempt
        self.ok = ok
        self.value = value
        self.error = error


Command = StartExecution


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
    execution_id = body.get("execution_id")
    if not isinstance(execution_id, str) or not execution_id:
        raise InvalidCommand("field 'execution_id' must be a non-empty string")
    if len(execution_id) > MAX_EXECUTION_ID_LENGTH:
        raise InvalidCommand(
            f"field 'execution_id' is longer than {MAX_EXECUTION_ID_LENGTH} characters"
        )
    schema = body.get("schema", COMMAND_SCHEMA)
    if not isinstance(schema, int) or schema > COMMAND_SCHEMA:
        raise InvalidCommand(f"unsupported command schema {schema!r}", execution_id)
    kind = body.get("type")
    if kind == CMD_START:
        workflow = body.get("workflow")
        if not isinstance(workflow, str) or not workflow:
            raise InvalidCommand("field 'workflow' must be a non-empty string", execution_id)
        return StartExecution(execution_id, workflow, body.get("inputs", {}))
    raise InvalidCommand(f"unknown command type {kind!r}", execution_id)


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
