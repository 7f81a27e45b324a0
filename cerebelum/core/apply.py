"""`apply`: fold one event into an execution's state. Every state change goes through here."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cerebelum.core import events as ev
from cerebelum.core.events import Event
from cerebelum.core.state import CANCELLED, COMPLETED, FAILED, RUNNING, SLEEPING, WAITING, Execution


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
    handler = _HANDLERS.get(kind)
    if handler is None:
        raise ValueError(f"unknown event type {kind!r}")
    state.version = event["version"]
    state.updated_at = event["at"]
    handler(state, event)
    return state


def fold(events: Iterable[Event]) -> Execution | None:
    state: Execution | None = None
    for e in events:
        state = apply(state, e)
    return state


def _started(s: Execution, e: Event) -> None:
    s.workflow = e["workflow"]
    s.workflow_version = e["workflow_version"]
    s.inputs = e["inputs"]
    s.started_at = e["at"]
    s.traceparent = e.get("traceparent")


def _scheduled(s: Execution, e: Event) -> None:
    _enter(s, e["node"])
    s.status = RUNNING
    s.attempts[e["step"]] = e["attempt"]
    s.running[e["step"]] = e["version"]


def _rescheduled(s: Execution, e: Event) -> None:
    s.attempts[e["step"]] = e["attempt"]
    s.running[e["step"]] = e["version"]  # the old run's report, if any, is now stale
    s.redispatches[e["step"]] = e["redispatch"]


def _completed(s: Execution, e: Event) -> None:
    step = e["step"]
    s.results[step] = e["result"]
    s.attempts.pop(step, None)
    s.running.pop(step, None)
    s.redispatches.pop(step, None)
    signal = e.get("signal")
    if signal is not None:
        s.waiting = None
        s.status = RUNNING
        for timer_id in [t for t, v in s.timers.items() if v["purpose"] == "signal_timeout"]:
            del s.timers[timer_id]
        queued = s.signals.get(signal)
        if queued:
            queued.pop(0)
            if not queued:
                del s.signals[signal]


def _failed(s: Execution, e: Event) -> None:
    s.running.pop(e["step"], None)


def _retry_scheduled(s: Execution, e: Event) -> None:
    s.timers[e["timer_id"]] = {"fire_at": e["fire_at"], "purpose": "retry", "step": e["step"]}
    s.attempts[e["step"]] = e["attempt"]


def _diverge_taken(s: Execution, e: Event) -> None:
    if e["action"] == "continue":
        s.attempts.pop(e["step"], None)  # the failed step counts as done
        s.redispatches.pop(e["step"], None)


def _jump_taken(s: Execution, e: Event) -> None:
    _leave_node(s)
    s.iteration = e["iteration"]


def _timer_started(s: Execution, e: Event) -> None:
    _enter(s, e["node"])
    s.timers[e["timer_id"]] = {"fire_at": e["fire_at"], "purpose": e["purpose"], "step": e["step"]}
    if e["purpose"] == "sleep":
        s.status = SLEEPING


def _timer_fired(s: Execution, e: Event) -> None:
    timer = s.timers.pop(e["timer_id"], None)
    if timer is not None and timer["purpose"] != "retry":
        s.status = RUNNING
        if timer["purpose"] == "signal_timeout":
            s.waiting = None


def _awaited(s: Execution, e: Event) -> None:
    _enter(s, e["node"])
    s.waiting = e["signal"]
    s.status = WAITING


def _signal_received(s: Execution, e: Event) -> None:
    s.signals.setdefault(e["signal"], []).append(e["payload"])


def _execution_completed(s: Execution, e: Event) -> None:
    _leave_node(s)
    s.status = COMPLETED
    s.output = e["output"]


def _execution_failed(s: Execution, e: Event) -> None:
    _leave_node(s)
    s.status = FAILED
    s.error = e["error"]


def _execution_cancelled(s: Execution, e: Event) -> None:
    _leave_node(s)
    s.status = CANCELLED
    s.error = ev.cancelled_error(e["reason"])


def _noop(s: Execution, e: Event) -> None:
    pass


def _enter(s: Execution, node: int) -> None:
    if s.cursor != node:
        s.cursor = node


def _leave_node(s: Execution) -> None:
    """Drop everything pending on the current node: its steps, timers and wait."""
    s.attempts.clear()
    s.running.clear()
    s.redispatches.clear()
    s.timers.clear()
    s.waiting = None


_HANDLERS: dict[str, Callable[[Execution, Event], None]] = {
    ev.EXECUTION_STARTED: _started,
    ev.STEP_SCHEDULED: _scheduled,
    ev.STEP_COMPLETED: _completed,
    ev.STEP_FAILED: _failed,
    ev.STEP_RETRY_SCHEDULED: _retry_scheduled,
    ev.STEP_RESCHEDULED: _rescheduled,
    ev.DIVERGE_TAKEN: _diverge_taken,
    ev.BRANCH_TAKEN: _noop,
    ev.JUMP_TAKEN: _jump_taken,
    ev.TIMER_STARTED: _timer_started,
    ev.TIMER_FIRED: _timer_fired,
    ev.SIGNAL_AWAITED: _awaited,
    ev.APPROVAL_REQUESTED: _awaited,
    ev.SIGNAL_RECEIVED: _signal_received,
    ev.EXECUTION_COMPLETED: _execution_completed,
    ev.EXECUTION_FAILED: _execution_failed,
    ev.EXECUTION_CANCELLED: _execution_cancelled,
}
