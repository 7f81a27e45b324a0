"""The execution state machine: `decide` turns an input into events and effects, `apply` folds.

    decide(state, input, now, registry) -> (state', events, effects)
    apply(state, event) -> state'

`decide` never changes state except through `apply`, so folding the events it returns from
nothing always gives the state the live worker holds (invariant 5). Effects are what the worker
must do once the events are durable: run a step.
"""

from __future__ import annotations

from typing import Any

from cerebelum.core import events as ev
from cerebelum.core.commands import StartExecution, StepOutcome
from cerebelum.core.events import Event, error_info, make_event
from cerebelum.core.state import COMPLETED, FAILED, Execution
from cerebelum.core.workflow import Registry, Step, StepContext, Workflow
from cerebelum.errors import UnknownWorkflow


class RunStep:
    """Effect: run `step` with `kwargs` and report a StepOutcome."""

    __slots__ = ("execution_id", "step", "attempt", "kwargs")

    def __init__(self, execution_id: str, step: Step, attempt: int, kwargs: dict[str, Any]) -> None:
        self.execution_id = execution_id
        self.step = step
        self.attempt = attempt
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"RunStep({self.execution_id!r}, {self.step.name!r}, attempt={self.attempt})"


Effect = RunStep
Decision = tuple[Execution | None, list[Event], list[Effect]]


class WorkflowMismatch(Exception):
    """The recorded history names a workflow version this worker does not have."""


# --- apply ------------------------------------------------------------------------------------


def apply(state: Execution | None, event: Event) -> Execution:
    """Fold one event into the state (mutates and returns it; None starts a new execution)."""
    kind = event["type"]
    if state is None:
        if kind != ev.EXECUTION_STARTED:
            raise ValueError(f"history must begin with ExecutionStarted, not {kind}")
        state = Execution(event["execution_id"])
    if event["version"] != state.version + 1:
        raise ValueError(
            f"event version {event['version']} does not follow {state.version} "
            f"for execution {state.id!r}"
        )
    state.version = event["version"]
    state.updated_at = event["at"]
    if kind == ev.STEP_SCHEDULED:
        state.cursor = event["index"]
        state.attempt = event["attempt"]
    elif kind == ev.STEP_COMPLETED:
        state.results[event["step"]] = event["result"]
    elif kind == ev.STEP_FAILED:
        pass  # the failure itself is history; what follows it is decided by the next event
    elif kind == ev.EXECUTION_STARTED:
        state.workflow = event["workflow"]
        state.workflow_version = event["workflow_version"]
        state.inputs = event["inputs"]
        state.started_at = event["at"]
    elif kind == ev.EXECUTION_COMPLETED:
        state.status = COMPLETED
        state.output = event["output"]
    elif kind == ev.EXECUTION_FAILED:
        state.status = FAILED
        state.error = event["error"]
    else:
        raise ValueError(f"unknown event type {kind!r}")
    return state


def fold(events: list[Event]) -> Execution | None:
    state: Execution | None = None
    for e in events:
        state = apply(state, e)
    return state


# --- decide -----------------------------------------------------------------------------------


class _Recorder:
    """Appends events to a list while folding them into the state."""

    __slots__ = ("state", "events", "now")

    def __init__(self, state: Execution | None, now: int) -> None:
        self.state = state
        self.events: list[Event] = []
        self.now = now

    def record(self, execution_id: str, type_: str, **fields: Any) -> None:
        version = self.state.version + 1 if self.state is not None else 1
        event = make_event(execution_id, version, type_, self.now, **fields)
        self.state = apply(self.state, event)
        self.events.append(event)


def decide(
    state: Execution | None,
    command: StartExecution | StepOutcome,
    now: int,
    registry: Registry,
) -> Decision:
    """The events and effects that `command` causes for the execution in `state`."""
    if isinstance(command, StartExecution):
        return _decide_start(state, command, now, registry)
    return _decide_outcome(state, command, now, registry)


def _decide_start(
    state: Execution | None, cmd: StartExecution, now: int, registry: Registry
) -> Decision:
    if state is not None:
        return state, [], []  # idempotent start: the execution exists already
    wf = registry.get(cmd.workflow)
    if wf is None:
        raise UnknownWorkflow(cmd.workflow, cmd.execution_id)
    rec = _Recorder(None, now)
    rec.record(
        cmd.execution_id,
        ev.EXECUTION_STARTED,
        workflow=wf.name,
        workflow_version=wf.version,
        inputs=cmd.inputs,
    )
    effects: list[Effect] = []
    _schedule(rec, wf, 0, 1, effects)
    return rec.state, rec.events, effects


def _decide_outcome(
    state: Execution | None, out: StepOutcome, now: int, registry: Registry
) -> Decision:
    if state is None or state.terminal:
        return state, [], []
    wf = registry.get(state.workflow)
    if wf is None or state.cursor < 0:
        return state, [], []
    current = wf.steps[state.cursor]
    if current.name != out.step or state.attempt != out.attempt:
        return state, [], []  # a stale report (an earlier attempt, a re-dispatch): ignore
    rec = _Recorder(state, now)
    effects: list[Effect] = []
    if out.ok:
        rec.record(state.id, ev.STEP_COMPLETED, step=out.step, attempt=out.attempt, result=out.value)
        nxt = state.cursor + 1
        if nxt < len(wf.steps):
            _schedule(rec, wf, nxt, 1, effects)
        else:
            rec.record(state.id, ev.EXECUTION_COMPLETED, output=out.value)
    else:
        error = out.error or error_info("Error", "step failed")
        rec.record(state.id, ev.STEP_FAILED, step=out.step, attempt=out.attempt, error=error)
        rec.record(
            state.id,
            ev.EXECUTION_FAILED,
            error=error_info(error.get("type", "Error"), error.get("message", ""), out.step),
        )
    return rec.state, rec.events, effects


def _schedule(rec: _Recorder, wf: Workflow, index: int, attempt: int, effects: list[Effect]) -> None:
    step = wf.steps[index]
    assert rec.state is not None
    rec.record(rec.state.id, ev.STEP_SCHEDULED, step=step.name, index=index, attempt=attempt)
    effects.append(run_step_effect(rec.state, wf, step, attempt))


def run_step_effect(state: Execution, wf: Workflow, step: Step, attempt: int) -> RunStep:
    kwargs: dict[str, Any] = {}
    for p in step.params:
        if p == "inputs":
            kwargs[p] = state.inputs
        elif p == "ctx":
            kwargs[p] = StepContext(state.id, wf.name, wf.version, step.name, attempt)
        else:
            kwargs[p] = state.results.get(p)
    return RunStep(state.id, step, attempt, kwargs)


def resume(state: Execution, registry: Registry) -> list[Effect]:
    """Effects to re-issue after a restore: the step scheduled but not yet recorded (at least once)."""
    if state.terminal or state.cursor < 0:
        return []
    wf = registry.get(state.workflow)
    if wf is None:
        return []
    return [run_step_effect(state, wf, wf.steps[state.cursor], state.attempt)]
