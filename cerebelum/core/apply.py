"""`apply`: fold one event into an execution's state. Every state change goes through here."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from cerebelum.core import events as ev
from cerebelum.core.events import Event
from cerebelum.core.state import (
    BLOCKED,
    CANCELLED,
    COMPLETED,
    FAILED,
    QUEUED,
    RUNNING,
    SLEEPING,
    WAITING,
    Execution,
)


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
    s.parent = e.get("parent")


def _scheduled(s: Execution, e: Event) -> None:
    _enter(s, e["node"])
    s.attempts[e["step"]] = e["attempt"]
    s.running[e["step"]] = e["version"]
    if "limiter" in e:  # a rate-limited run: it waits for its permit
        s.awaiting[e["step"]] = [e["version"], e["limiter"]]
        s.status = QUEUED
    else:
        s.status = RUNNING


def _step_admitted(s: Execution, e: Event) -> None:
    s.awaiting.pop(e["step"], None)
    _admitted(s, e)


def _execution_queued(s: Execution, e: Event) -> None:
    s.limiter = e["limiter"]
    s.status = QUEUED


def _admitted(s: Execution, e: Event) -> None:
    if e.get("blocked") and s.blocked is not None:  # it runs on once it resumes
        s.blocked = {**s.blocked, "status": RUNNING}
    else:
        s.status = RUNNING


def _limit_set(s: Execution, e: Event) -> None:
    # Replaced, never mutated: copies of the state share the values in `results`.
    r = s.results
    limit = e["limit"]
    s.results = {
        "limit": limit,
        "per_ms": e["per_ms"],
        "holders": r.get("holders", []),
        "queue": r.get("queue", []),
        "recent": r.get("recent", [])[-limit:],
        "granted": r.get("granted", 0),
        "denied": r.get("denied", 0),
    }


def _entry(e: Event) -> list[Any]:
    return [e["holder"], e["step"], e["token"]]


def _permit_granted(s: Execution, e: Event) -> None:
    r = dict(s.results)
    entry = _entry(e)
    r["queue"] = [q for q in r["queue"] if q != entry]
    if r["per_ms"] is None:
        r["holders"] = [*r["holders"], entry]
    else:
        r["recent"] = [*r["recent"], e["at"]][-r["limit"] :]
    r["granted"] += 1
    s.results = r


def _permit_queued(s: Execution, e: Event) -> None:
    s.results = {**s.results, "queue": [*s.results["queue"], _entry(e)]}


def _permit_released(s: Execution, e: Event) -> None:
    entry = _entry(e)
    r = s.results
    s.results = {**r, "holders": [h for h in r["holders"] if h != entry],
                 "queue": [q for q in r["queue"] if q != entry]}  # fmt: skip


def _permit_denied(s: Execution, e: Event) -> None:
    s.results = {**s.results, "denied": s.results["denied"] + 1}


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
    if s.pending:
        _unpend(s, step)
    if s.children:
        s.children.pop(step, None)
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
    if s.pending:
        _unpend(s, e["step"])
    if s.children:
        s.children.pop(e["step"], None)


def _children_started(s: Execution, e: Event) -> None:
    _enter(s, e["node"])
    s.status = RUNNING
    n = len(e["children"])
    s.children[e["step"]] = {"ids": e["children"], "done": [False] * n, "outputs": [None] * n}


def _schedule_fired(s: Execution, e: Event) -> None:
    # Replaced, never mutated: copies of the state share the values in `results`.
    r = s.results
    r["live"] = [*r.get("live", []), e["run"]]
    r["runs"] = r.get("runs", 0) + 1
    if not e.get("manual"):
        r["last_tick"] = e["tick"]


def _schedule_skipped(s: Execution, e: Event) -> None:
    s.results["skipped"] = s.results.get("skipped", 0) + e["ticks"]


def _schedule_run_ended(s: Execution, e: Event) -> None:
    s.results["live"] = [run for run in s.results.get("live", []) if run != e["run"]]


def _schedule_paused(s: Execution, e: Event) -> None:
    s.status = WAITING
    for timer_id in [t for t, v in s.timers.items() if v["purpose"] == "tick"]:
        del s.timers[timer_id]


def _schedule_resumed(s: Execution, e: Event) -> None:
    s.status = RUNNING


def _child_completed(s: Execution, e: Event) -> None:
    node = s.children[e["step"]]
    node["done"][e["index"]] = True
    node["outputs"][e["index"]] = e["output"]


def _pending(s: Execution, e: Event) -> None:
    step = e["step"]
    s.running.pop(step, None)
    s.pending[step] = e["token"]
    if "timer_id" in e:
        s.timers[e["timer_id"]] = {"fire_at": e["fire_at"], "purpose": "pending", "step": step}


def _unpend(s: Execution, step: str) -> None:
    """A pending step was completed, failed or timed out: its completion timer goes too."""
    if s.pending.pop(step, None) is not None:
        for timer_id in [
            t for t, v in s.timers.items() if v["purpose"] == "pending" and v["step"] == step
        ]:
            del s.timers[timer_id]


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


def _execution_blocked(s: Execution, e: Event) -> None:
    previous = s.blocked["status"] if s.blocked is not None else e["status"]
    s.blocked = {
        "waiting_for": e["waiting_for"],
        "versions_here": e["versions_here"],
        "reason": e["reason"],
        "status": previous,
    }
    s.status = BLOCKED


def _execution_resumed(s: Execution, e: Event) -> None:
    s.blocked = None
    s.status = e["status"]
    s.workflow_version = e["workflow_version"]  # another only for one that never began


def _execution_migrated(s: Execution, e: Event) -> None:
    """Rename what the execution holds from the old version's node names to the new one's;
    names the mapping leaves out (results of nodes the new version lacks) keep theirs."""
    mapping: dict[str, str] = e["mapping"]

    def rename(table: dict[str, Any]) -> dict[str, Any]:
        return {mapping.get(name, name): value for name, value in table.items()}

    s.workflow_version = e["to"]
    s.results = rename(s.results)
    s.attempts = rename(s.attempts)
    s.running = rename(s.running)
    s.redispatches = rename(s.redispatches)
    s.pending = rename(s.pending)
    s.children = rename(s.children)
    s.awaiting = rename(s.awaiting)
    s.timers = {
        timer_id: {**t, "step": mapping.get(t["step"], t["step"])}
        for timer_id, t in s.timers.items()
    }
    s.cursor = e["node"]
    if s.waiting is not None:
        s.waiting = e["signal"]


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
    s.pending.clear()
    s.children.clear()
    s.awaiting.clear()
    s.timers.clear()
    s.waiting = None
    s.blocked = None


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
    ev.EXECUTION_BLOCKED: _execution_blocked,
    ev.EXECUTION_RESUMED: _execution_resumed,
    ev.EXECUTION_MIGRATED: _execution_migrated,
    ev.STEP_PENDING: _pending,
    ev.CHILDREN_STARTED: _children_started,
    ev.CHILD_COMPLETED: _child_completed,
    ev.SCHEDULE_FIRED: _schedule_fired,
    ev.SCHEDULE_SKIPPED: _schedule_skipped,
    ev.SCHEDULE_RUN_ENDED: _schedule_run_ended,
    ev.SCHEDULE_PAUSED: _schedule_paused,
    ev.SCHEDULE_RESUMED: _schedule_resumed,
    ev.EXECUTION_QUEUED: _execution_queued,
    ev.EXECUTION_ADMITTED: _admitted,
    ev.STEP_ADMITTED: _step_admitted,
    ev.LIMIT_SET: _limit_set,
    ev.PERMIT_GRANTED: _permit_granted,
    ev.PERMIT_QUEUED: _permit_queued,
    ev.PERMIT_RELEASED: _permit_released,
    ev.PERMIT_DENIED: _permit_denied,
}
