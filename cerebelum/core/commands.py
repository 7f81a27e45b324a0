"""Inputs to the state machine: commands from Kafka and outcomes reported by the worker.

Wire format of a command on cerebelum.commands (documented in docs/start-command.md):
key = execution_id (UTF-8; the record must sit on the id's home partition, see core/ids.py),
value = a JSON object

    {"type": "StartExecution", "execution_id": "...", "workflow": "...", "inputs": {...},
     "traceparent": "00-<trace id>-<span id>-01"}    (traceparent optional, W3C trace context)
    {"type": "SendSignal", "execution_id": "...", "signal": "approval", "payload": {...}}
    {"type": "CancelExecution", "execution_id": "...", "reason": "..."}
    {"type": "CompleteStep", "execution_id": "...", "step": "...", "token": 7,
     "result": ...}  or  "error": {"type": "...", "message": "..."}
                                   (a step handed out for external completion: ctx.pending())
    {"type": "ChildEnded", "execution_id": "<parent>", "step": "...", "index": 0,
     "child": "...", "status": "completed", "output": ...}  or  "error": {...}
                                   (produced by the worker, in the child's last transaction)
    {"type": "Permit", "execution_id": "<limiter or holder>", "op": "acquire" | "release" |
     "grant", "holder": "...", "step": "..." | null, "token": 7 | null, "limit": 1,
     "per_ms": 1000 | null, "limiter": "..." (of a grant), "denied": "..." (a grant refused)}
                                   (concurrency and rate limits, decisions.md §20: produced
                                   by the worker, in the transaction that decides them)
A StartExecution of a child execution also has "parent": {"execution_id", "step", "index"}.
Any command may name its namespace, "namespace": "..." (our entrances write it: the Client, the
API, the CLI); a worker dead-letters one naming another namespace than its own, and takes one
without the field as its topic's (decisions.md, "Namespaces").
"""

from __future__ import annotations

import re
from typing import Any, cast

import orjson

from cerebelum.constants import (
    CMD_CANCEL,
    CMD_CHILD_ENDED,
    CMD_COMPLETE,
    CMD_PERMIT,
    CMD_SIGNAL,
    CMD_START,
    COMMAND_SCHEMA,
)
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
    spans join the caller's trace (cerebelum.telemetry.tracing). `parent`: of a child
    execution, {"execution_id", "step", "index"} of the parent node waiting for it."""

    __slots__ = ("execution_id", "workflow", "inputs", "traceparent", "parent")

    def __init__(
        self,
        execution_id: str,
        workflow: str,
        inputs: Any,
        traceparent: str | None = None,
        parent: dict[str, Any] | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.workflow = workflow
        self.inputs = inputs
        self.traceparent = traceparent
        self.parent = parent


class ChildEnded:
    """A child execution ended (`status`): its output, or its error, for the parent node
    `step` waiting for it as its child number `index`."""

    __slots__ = ("execution_id", "step", "index", "child", "status", "output", "error")

    def __init__(
        self,
        execution_id: str,
        step: str,
        index: int,
        child: str,
        status: str,
        output: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        self.execution_id = execution_id  # the parent's
        self.step = step
        self.index = index
        self.child = child
        self.status = status
        self.output = output
        self.error = error


class Permit:
    """A limiter's traffic (decisions.md §20). To a limiter: `acquire` (queue `holder`, or
    grant it at once) and `release` (the holder ended: the next in line gets the permit). To
    a holder: `grant` (its execution may run, or, with `step`, that step's run `token`), or a
    grant `denied` with the reason."""

    __slots__ = ("execution_id", "op", "holder", "step", "token", "limit", "per_ms", "denied",
                 "limiter")  # fmt: skip

    def __init__(
        self,
        execution_id: str,
        op: str,
        holder: str,
        step: str | None = None,
        token: int | None = None,
        limit: int = 1,
        per_ms: int | None = None,
        denied: str | None = None,
        limiter: str | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.op = op
        self.holder = holder
        self.step = step
        self.token = token
        self.limit = limit
        self.per_ms = per_ms
        self.denied = denied
        # Of a grant: the limiter that gives it (its holder checks it is the one it asked).
        self.limiter = execution_id if limiter is None else limiter

    def encode(self) -> bytes:
        """The record value (keyed by `execution_id`: the limiter's, or the holder's for a
        grant, which names its `limiter`)."""
        command: dict[str, Any] = {
            "type": CMD_PERMIT,
            "schema": COMMAND_SCHEMA,
            "execution_id": self.execution_id,
            "op": self.op,
            "holder": self.holder,
            "step": self.step,
            "token": self.token,
            "limit": self.limit,
            "per_ms": self.per_ms,
        }
        if self.denied is not None:
            command["denied"] = self.denied
        if self.op == "grant":
            command["limiter"] = self.limiter
        return orjson.dumps(command)


PERMIT_OPS = ("acquire", "release", "grant")


class StepOutcome:
    """What a step run returned or raised, reported back by the worker's step runner.
    `traceback`: the formatted traceback of what it raised, already bounded
    (core.events.traceback_text), recorded on its StepFailed event. `worker`: who ran it, as
    the cluster view names the worker (its Kafka client id), recorded on its StepCompleted or
    StepFailed event; None leaves the event without it. `pending`: the run returned
    ctx.pending(timeout=...): it is completed later from outside (CompleteStep), within
    `pending` seconds (0: no limit)."""

    __slots__ = (
        "execution_id", "step", "token", "ok", "value", "error", "traceback", "worker", "pending",
    )  # fmt: skip

    def __init__(
        self,
        execution_id: str,
        step: str,
        token: int,
        ok: bool,
        value: Any = None,
        error: dict[str, Any] | None = None,
        traceback: str | None = None,
        worker: str | None = None,
        pending: float | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.step = step
        self.token = token  # the StepScheduled version this run answers
        self.ok = ok
        self.value = value
        self.error = error
        self.traceback = traceback
        self.worker = worker
        self.pending = pending


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


class CompleteStep:
    """An outside system completes a step that returned ctx.pending(): with a result (`ok`) or
    an error ({"type", "message"}). `token` is the run's (the version of its StepScheduled), so
    a completion of an earlier attempt, or a second one, is refused."""

    __slots__ = ("execution_id", "step", "token", "ok", "value", "error")

    def __init__(
        self,
        execution_id: str,
        step: str,
        token: int,
        ok: bool,
        value: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.step = step
        self.token = token
        self.ok = ok
        self.value = value
        self.error = error


def completion_token(execution_id: str, step: str, token: int) -> str:
    """What a pending step hands to the system that completes it: `execution/step/token`
    (execution ids never hold '/')."""
    return f"{execution_id}/{step}/{token}"


def parse_completion_token(value: str) -> tuple[str, str, int]:
    """(execution id, step, token) of a completion token; ValueError naming what is wrong."""
    execution_id, sep, rest = value.partition("/")
    step, sep2, number = rest.rpartition("/")
    if not (sep and sep2 and execution_id and step and number.isdigit()):
        raise ValueError(f"not a completion token (execution/step/number): {value[:200]!r}")
    problem = id_problem(execution_id)
    if problem is not None:
        raise ValueError(f"completion token: {problem}")
    return execution_id, step, int(number)


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


Command = StartExecution | SendSignal | CancelExecution | CompleteStep | ChildEnded | Permit
Input = Command | StepOutcome | TimerDue | Recover | FailExecution


def parse_command(raw: bytes | None, namespace: str | None = None) -> Command:
    """Decode one record value from cerebelum.commands, or raise InvalidCommand with the reason.

    `namespace`: the reader's; a command naming another one is refused (sent to the wrong
    namespace's topic). A command without the field is the topic's. None checks nothing."""
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
    if namespace is not None and "namespace" in body and body["namespace"] != namespace:
        raise InvalidCommand(
            f"command names namespace {repr(body['namespace'])[:60]}, but it was read from "
            f"namespace {namespace!r}'s commands topic (produced to the wrong namespace)",
            execution_id,
        )
    kind = body.get("type")
    if kind == CMD_START:
        workflow = _name_field(body, "workflow", execution_id)
        traceparent = parse_traceparent(body["traceparent"]) if "traceparent" in body else None
        parent = _parent(body["parent"], execution_id) if "parent" in body else None
        return StartExecution(execution_id, workflow, body.get("inputs", {}), traceparent, parent)
    if kind == CMD_SIGNAL:
        signal = _name_field(body, "signal", execution_id)
        return SendSignal(execution_id, signal, body.get("payload"))
    if kind == CMD_CANCEL:
        reason = body.get("reason", "cancelled")
        if not isinstance(reason, str):
            raise InvalidCommand("field 'reason' must be a string", execution_id)
        return CancelExecution(execution_id, reason)
    if kind == CMD_COMPLETE:
        return _completion(body, execution_id)
    if kind == CMD_CHILD_ENDED:
        return _child_ended(body, execution_id)
    if kind == CMD_PERMIT:
        return _permit(body, execution_id)
    raise InvalidCommand(f"unknown command type {kind!r}", execution_id)


def _parent(value: Any, execution_id: str) -> dict[str, Any]:
    if not (
        isinstance(value, dict)
        and id_problem(value.get("execution_id")) is None
        and isinstance(value.get("step"), str)
        and value["step"]
        and isinstance(value.get("index"), int)
        and not isinstance(value["index"], bool)
        and value["index"] >= 0
    ):
        raise InvalidCommand(
            'field \'parent\' must be {"execution_id", "step", "index"}', execution_id
        )
    return {"execution_id": value["execution_id"], "step": value["step"], "index": value["index"]}


def _child_ended(body: dict[str, Any], execution_id: str) -> ChildEnded:
    where = _parent({**body, "execution_id": execution_id}, execution_id)
    child = _name_field(body, "child", execution_id)
    status = body.get("status")
    if status not in ("completed", "failed", "cancelled"):
        raise InvalidCommand("field 'status' must be completed, failed or cancelled", execution_id)
    error = body.get("error")
    if status != "completed" and not (
        isinstance(error, dict) and isinstance(error.get("type"), str)
    ):
        raise InvalidCommand("a child that did not complete needs an 'error'", execution_id)
    return ChildEnded(
        execution_id, where["step"], where["index"], child, status, body.get("output"), error
    )


def _permit(body: dict[str, Any], execution_id: str) -> Permit:
    op = body.get("op")
    if op not in PERMIT_OPS:
        raise InvalidCommand(f"field 'op' must be one of {', '.join(PERMIT_OPS)}", execution_id)
    holder = _name_field(body, "holder", execution_id)
    step, token = body.get("step"), body.get("token")
    if step is not None and not (isinstance(step, str) and step):
        raise InvalidCommand("field 'step' must be a step's name or null", execution_id)
    if (step is None) != (token is None) or not (
        token is None or (isinstance(token, int) and not isinstance(token, bool) and token > 0)
    ):
        raise InvalidCommand("a step's permit names its 'step' and its run's 'token'", execution_id)
    limit, per_ms = body.get("limit", 1), body.get("per_ms")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidCommand("field 'limit' must be a whole number from 1", execution_id)
    if per_ms is not None and (
        isinstance(per_ms, bool) or not isinstance(per_ms, int) or per_ms < 1
    ):
        raise InvalidCommand("field 'per_ms' must be a whole number of milliseconds", execution_id)
    denied = body.get("denied")
    if denied is not None and not isinstance(denied, str):
        raise InvalidCommand("field 'denied' must be a string", execution_id)
    limiter = _name_field(body, "limiter", execution_id) if op == "grant" else None
    return Permit(execution_id, op, holder, step, token, limit, per_ms, denied, limiter)


def _completion(body: dict[str, Any], execution_id: str) -> CompleteStep:
    step = body.get("step")
    if not isinstance(step, str) or not step:
        raise InvalidCommand("field 'step' must be a step name", execution_id)
    token = body.get("token")
    if not isinstance(token, int) or isinstance(token, bool) or token < 1:
        raise InvalidCommand("field 'token' must be a positive integer", execution_id)
    if ("result" in body) == ("error" in body):
        raise InvalidCommand("a CompleteStep has either 'result' or 'error'", execution_id)
    if "result" in body:
        return CompleteStep(execution_id, step, token, True, value=body["result"])
    error = body["error"]
    if not (
        isinstance(error, dict)
        and isinstance(error.get("type"), str)
        and error["type"]
        and isinstance(error.get("message", ""), str)
    ):
        raise InvalidCommand(
            'field \'error\' must be {"type": "...", "message": "..."}', execution_id
        )
    info = {"type": error["type"][:200], "message": error.get("message", "")[:2000]}
    return CompleteStep(execution_id, step, token, False, error=info)


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
    execution_id: str,
    workflow: str,
    inputs: Any,
    traceparent: str | None = None,
    parent: dict[str, Any] | None = None,
    namespace: str | None = None,
) -> bytes:
    """Encode a StartExecution command's value (the key is the execution id). `namespace`,
    given by an entrance (Client, API, CLI), names the namespace the command is for."""
    command = {
        "type": CMD_START,
        "schema": COMMAND_SCHEMA,
        "execution_id": execution_id,
        "workflow": workflow,
        "inputs": inputs,
    }
    if traceparent is not None:
        command["traceparent"] = traceparent
    if parent is not None:
        command["parent"] = parent
    return _encode(command, namespace)


def child_ended_command(
    parent: dict[str, Any], child: str, status: str, output: Any, error: dict[str, Any] | None
) -> bytes:
    """Encode the ChildEnded a child execution sends its parent (keyed by the parent's id)."""
    command: dict[str, Any] = {
        "type": CMD_CHILD_ENDED,
        "schema": COMMAND_SCHEMA,
        "execution_id": parent["execution_id"],
        "step": parent["step"],
        "index": parent["index"],
        "child": child,
        "status": status,
    }
    if status == "completed":
        command["output"] = output
    else:
        command["error"] = error
    return orjson.dumps(command)


def signal_command(
    execution_id: str, signal: str, payload: Any, namespace: str | None = None
) -> bytes:
    command = {
        "type": CMD_SIGNAL,
        "schema": COMMAND_SCHEMA,
        "execution_id": execution_id,
        "signal": signal,
        "payload": payload,
    }
    return _encode(command, namespace)


def complete_command(
    execution_id: str,
    step: str,
    token: int,
    result: Any = None,
    error: dict[str, Any] | None = None,
    namespace: str | None = None,
) -> bytes:
    """Encode a CompleteStep: with `error` ({"type", "message"}) a failure, else `result`."""
    command: dict[str, Any] = {
        "type": CMD_COMPLETE,
        "schema": COMMAND_SCHEMA,
        "execution_id": execution_id,
        "step": step,
        "token": token,
    }
    if error is not None:
        command["error"] = error
    else:
        command["result"] = result
    return _encode(command, namespace)


def cancel_command(execution_id: str, reason: str, namespace: str | None = None) -> bytes:
    command = {
        "type": CMD_CANCEL,
        "schema": COMMAND_SCHEMA,
        "execution_id": execution_id,
        "reason": reason,
    }
    return _encode(command, namespace)


def _encode(command: dict[str, Any], namespace: str | None) -> bytes:
    if namespace is not None:
        command["namespace"] = namespace
    return orjson.dumps(command)
