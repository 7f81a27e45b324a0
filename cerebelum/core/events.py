"""Events: past-tense facts about one execution, in the order they happened.

An event is a plain dict (it goes to orjson as is, with no model object on the hot path):

    {"execution_id": str, "version": int, "type": str, "schema": int, "at": epoch-ms, ...fields}

`version` runs 1..n per execution with no gap. The fields of each type:

    ExecutionStarted    workflow, workflow_version, inputs
    StepScheduled       step, index (in the timeline), attempt
    StepCompleted       step, attempt, result
    StepFailed          step, attempt, error {type, message}
    ExecutionCompleted  output
    ExecutionFailed     error {type, message, step?}
"""

from __future__ import annotations

from typing import Any

from cerebelum.constants import EVENT_SCHEMA

EXECUTION_STARTED = "ExecutionStarted"
STEP_SCHEDULED = "StepScheduled"
STEP_COMPLETED = "StepCompleted"
STEP_FAILED = "StepFailed"
EXECUTION_COMPLETED = "ExecutionCompleted"
EXECUTION_FAILED = "ExecutionFailed"

EVENT_TYPES = frozenset(
    {
        EXECUTION_STARTED,
        STEP_SCHEDULED,
        STEP_COMPLETED,
        STEP_FAILED,
        EXECUTION_COMPLETED,
        EXECUTION_FAILED,
    }
)

TERMINAL_EVENTS = frozenset({EXECUTION_COMPLETED, EXECUTION_FAILED})

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


def error_info(type_: str, message: str, step: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"type": type_, "message": message}
    if step is not None:
        info["step"] = step
    return info
