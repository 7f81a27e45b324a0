"""Events: past-tense facts about one execution, in the order they happened.

An event is a plain dict (it goes to orjson as is, with no model object on the hot path):

    {"execution_id": str, "version": int, "type": str, "schema": int, "at": epoch-ms, ...fields}

`version` runs 1..n per execution with no gap. The fields of each type:

    ExecutionStarted    workflow, workflow_version, inputs
    StepScheduled       step, node (index in the timeline), attempt
    StepCompleted       step, attempt, result [, signal]  (a signal wait completes with its payload)
    StepFailed          step, attempt, error {type, types, message}
    StepRetryScheduled  step, attempt (the next one), timer_id, fire_at, delay_ms
    StepRescheduled     step, attempt (the next one), reason, redispatch (how many times so far)
                        a step in flight when its partition changed owner runs again
    DivergeTaken        step, rule, action, target
    BranchTaken         step, rule, action, target
    JumpTaken           from_step, to_step, node, kind ("back_to" | "skip_to"), iteration
    TimerStarted        timer_id, fire_at, step (the node), node, purpose (sleep|signal_timeout)
    TimerFired          timer_id
    SignalAwaited       signal, step, node, timeout_at
    ApprovalRequested   signal, step, node, timeout_at
    SignalReceived      signal, payload
    ExecutionCompleted  output
    ExecutionFailed     error {type, message, step?}
    ExecutionCancelled  reason
"""

from __future__ import annotations

from typing import Any

from cerebelum.constants import EVENT_SCHEMA

EXECUTION_STARTED = "ExecutionStarted"
STEP_SCHEDULED = "StepScheduled"
STEP_COMPLETED = "StepCompleted"
STEP_FAILED = "StepFailed"
STEP_RETRY_SCHEDULED = "StepRetryScheduled"
STEP_RESCHEDULED = "StepRescheduled"
DIVERGE_TAKEN = "DivergeTaken"
BRANCH_TAKEN = "BranchTaken"
JUMP_TAKEN = "JumpTaken"
TIMER_STARTED = "TimerStarted"
TIMER_FIRED = "TimerFired"
SIGNAL_AWAITED = "SignalAwaited"
APPROVAL_REQUESTED = "ApprovalRequested"
SIGNAL_RECEIVED = "SignalReceived"
EXECUTION_COMPLETED = "ExecutionCompleted"
EXECUTION_FAILED = "ExecutionFailed"
EXECUTION_CANCELLED = "ExecutionCancelled"

EVENT_TYPES = frozenset(
    {
        EXECUTION_STARTED,
        STEP_SCHEDULED,
        STEP_COMPLETED,
        STEP_FAILED,
        STEP_RETRY_SCHEDULED,
        STEP_RESCHEDULED,
        DIVERGE_TAKEN,
        BRANCH_TAKEN,
        JUMP_TAKEN,
        TIMER_STARTED,
        TIMER_FIRED,
        SIGNAL_AWAITED,
        APPROVAL_REQUESTED,
        SIGNAL_RECEIVED,
        EXECUTION_COMPLETED,
        EXECUTION_FAILED,
        EXECUTION_CANCELLED,
    }
)

TERMINAL_EVENTS = frozenset({EXECUTION_COMPLETED, EXECUTION_FAILED, EXECUTION_CANCELLED})

Event = dict[str, Any]


def make_event(execution_id: str, version: int, type_: str, at: int, **fields: Any) -> Event:
    return {
        "execution_id": execution_id,
        "version": version,
        "type": type_,
        "schema": EVENT_SCHEMA,
        "at": at,
        **fields,
    }


def error_info(
    type_: str, message: str, step: str | None = None, types: list[str] | None = None
) -> dict[str, Any]:
    """An error as recorded: its type, the names of its base classes (for diverge rules)."""
    info: dict[str, Any] = {"type": type_, "message": message}
    if types is not None:
        info["types"] = types
    if step is not None:
        info["step"] = step
    return info


def cancelled_error(reason: str) -> dict[str, Any]:
    """The error of a cancelled execution: one shape in the state, PostgreSQL and the client."""
    return error_info("Cancelled", reason)


def exception_info(exc: BaseException) -> dict[str, Any]:
    types = [c.__name__ for c in type(exc).__mro__ if c not in (object, BaseException)]
    return error_info(type(exc).__name__, str(exc), types=types)
