"""An execution's step table from its history: each step's runs, attempts, times, last error.

One row per step, in the order the steps first ran; each row lists its runs (an attempt that was
dispatched, or a wait for a signal) with when it began and ended, its outcome and duration, and
the worker that ran it, named as the cluster view names workers (null for a wait, a run not
ended, or a history recorded before outcomes named their worker); the row's `worker` is its
latest run's. A child node's run is of kind "children" and lists its child executions' ids.
A step that a loop (`back_to`) ran again gets more runs, its attempts counting from 1 again.
Times are epoch milliseconds, as in the events.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cerebelum.core import events as ev
from cerebelum.core.events import Event


def step_table(events: Iterable[Event]) -> list[dict[str, Any]]:
    steps: dict[str, dict[str, Any]] = {}

    def row(name: str) -> dict[str, Any]:
        if name not in steps:
            steps[name] = {"step": name, "status": "pending", "attempts": 0, "runs": [],
                           "started_at": None, "finished_at": None, "duration_ms": None,
                           "last_error": None, "worker": None}  # fmt: skip
        return steps[name]

    def begin(r: dict[str, Any], at: int, attempt: int, kind: str) -> None:
        r["runs"].append({"attempt": attempt, "kind": kind, "started_at": at, "ended_at": None,
                          "outcome": None, "duration_ms": None, "worker": None})  # fmt: skip
        r["attempts"] = max(r["attempts"], attempt) if kind == "attempt" else r["attempts"]
        r["status"] = "running" if kind in ("attempt", "children") else "waiting"
        r["started_at"] = r["started_at"] if r["started_at"] is not None else at
        r["finished_at"] = None

    def end(r: dict[str, Any], at: int, outcome: str, worker: str | None = None) -> None:
        runs = r["runs"]
        if runs and runs[-1]["ended_at"] is None:
            runs[-1].update(ended_at=at, outcome=outcome, worker=worker or runs[-1]["worker"],
                            duration_ms=at - runs[-1]["started_at"])  # fmt: skip
        if worker is not None:
            r["worker"] = worker  # the row names who ran its latest run

    for e in events:
        kind = e["type"]
        if kind == ev.STEP_SCHEDULED:
            begin(row(e["step"]), e["at"], e.get("attempt", 1), "attempt")
        elif kind == ev.APPROVAL_REQUESTED or kind == ev.SIGNAL_AWAITED:
            begin(row(e["step"]), e["at"], 1, "wait")
        elif kind == ev.STEP_COMPLETED:
            r = row(e["step"])
            end(r, e["at"], "completed", e.get("worker"))
            r.update(status="completed", finished_at=e["at"])
            r["duration_ms"] = e["at"] - r["started_at"] if r["started_at"] is not None else None
        elif kind == ev.STEP_FAILED:
            r = row(e["step"])
            end(r, e["at"], "failed", e.get("worker"))
            r["status"] = "failed"
            r["last_error"] = {**e.get("error", {}), "attempt": e.get("attempt"), "at": e["at"],
                               "traceback": e.get("traceback"),
                               "worker": e.get("worker")}  # fmt: skip
        elif kind == ev.STEP_RESCHEDULED:  # its worker changed while it ran: dispatched again
            r = row(e["step"])
            end(r, e["at"], "redispatched")
            begin(r, e["at"], e.get("attempt", 1), "attempt")
        elif kind == ev.CHILDREN_STARTED:  # a child node: one run over all its children
            r = row(e["step"])
            begin(r, e["at"], 1, "children")
            r["runs"][-1]["children"] = list(e.get("children", []))
            r["children"] = list(e.get("children", []))
        elif kind == ev.STEP_PENDING:  # handed to another system; ends when it completes it
            r = row(e["step"])
            r.update(status="awaiting_completion", completion_deadline=e.get("fire_at"))
            if r["runs"] and e.get("worker"):
                r["runs"][-1]["worker"] = r["worker"] = e["worker"]
        elif kind == ev.STEP_RETRY_SCHEDULED:
            r = row(e["step"])
            r.update(status="retrying", next_attempt_at=e.get("fire_at"))
    return list(steps.values())


def queued_on(events: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """What a queued execution waits for (decisions.md §20): the limiter of its concurrency
    limit (with the key), or of a rate-limited step's run (with the step); its history holds
    the limiter's own page."""
    waiting: dict[str, Any] | None = None
    for e in events:
        kind = e.get("type")
        if kind == ev.EXECUTION_QUEUED:
            waiting = {"limiter": e.get("limiter"), "key": e.get("key"), "step": None}
        elif kind == ev.STEP_SCHEDULED and "limiter" in e:
            waiting = {"limiter": e["limiter"], "key": None, "step": e.get("step")}
    return waiting
