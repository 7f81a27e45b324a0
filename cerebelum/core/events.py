"""Events: past-tense facts about one execution, in the order they happened.

An event is a plain dict (it goes to orjson as is, with no model object on the hot path):

    {"execution_id": str, "version": int, "type": str, "schema": int, "at": epoch-ms, ...fields}

`version` runs 1..n per execution with no gap. The fields of each type:

    ExecutionStarted    workflow, workflow_version, inputs [, traceparent] [, parent]
                        (the caller's W3C trace context, when its start command had one;
                        parent {execution_id, step, index}: a child execution's parent node)
    StepScheduled       step, node (index in the timeline), attempt [, limiter]
                        (with `limiter`, a rate-limited run: it waits for its permit, queued)
    StepAdmitted        step, token [, blocked]   the rate limiter's permit came: it runs
    StepCompleted       step, attempt, result [, signal] [, worker]
                        (a signal wait completes with its payload)
    StepFailed          step, attempt, error {type, types, message} [, traceback] [, worker]
                        (the step's traceback, innermost frames kept, at most
                        MAX_TRACEBACK_BYTES; absent when there is none, e.g. a timeout)
                        `worker`: who ran the step, named as the cluster view names workers
                        (their Kafka client id, "cerebelum-worker:<id>"); absent in histories
                        recorded before it, and on a wait that a signal or timer ended
    StepRetryScheduled  step, attempt (the next one), timer_id, fire_at, delay_ms
    StepRescheduled     step, attempt (the next one), reason, redispatch (how many times so far)
                        a step in flight when its partition changed owner runs again
    ChildrenStarted     step (the child node), node, workflow, children (their execution ids)
    ChildCompleted      step, index, child, output    (one child of the node ended well; the
                        node's StepCompleted follows the last, its StepFailed the first failure)
    ScheduleFired       tick, run (the execution it started), manual   (a schedule's execution:
                        its inputs are the spec; TimerStarted purpose "tick" arms each tick)
    ScheduleSkipped     ticks (how many), reason, last (the latest tick skipped)
    ScheduleRunEnded    run, status        SchedulePaused, ScheduleResumed   (no fields)
    StepPending         step, attempt, token [, timer_id, fire_at]  the run returned
                        ctx.pending(timeout=): completed later from outside (CompleteStep,
                        carrying token), or failed with StepTimeout at fire_at
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
    ExecutionBlocked    waiting_for (the version it needs), versions_here (what the worker has),
                        reason, status (the status it had; restored when it resumes)
    ExecutionResumed    workflow_version (the version it runs on from now), status
    ExecutionMigrated   from, to (versions), mapping {old node: new node} (the declared
                        mapping), node (its new index), signal (what it waits for now, or null)
                        (decisions.md §6: a blocked execution is held, not failed)
    ExecutionQueued     limiter, key     (its concurrency limit is full: it waits in line)
    ExecutionAdmitted   limiter [, blocked]   (its permit came: it enters its first node)
  Of a limiter (workflow cerebelum.limiter, decisions.md §20; results hold its state):
    LimitSet            limit, per_ms (null: a concurrency limit)
    PermitGranted       holder, step, token    (step and token: a step run's permit)
    PermitQueued        holder, step, token
    PermitReleased      holder, step, token
    PermitDenied        holder, step, token, reason   (the queue was full)
"""

from __future__ import annotations

import traceback as _traceback
from collections.abc import Callable
from typing import Any

from cerebelum.constants import EVENT_SCHEMA

# A StepFailed event carries at most this much of its step's traceback: enough for the frames
# that matter (the innermost), small beside the 4 MiB record limit even when a step fails
# thousands of times, and readable in the history.
MAX_TRACEBACK_BYTES = 4 * 1024

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
# Versions (decisions.md §6): held while no definition of its version is here, then resumed
# or moved on purpose to a newer version that declares a mapping from it.
EXECUTION_BLOCKED = "ExecutionBlocked"
# External completion (decisions.md §17): a step handed to another system.
STEP_PENDING = "StepPending"
# Schedules (decisions.md §19): an execution of the built-in workflow cerebelum.schedule.
SCHEDULE_FIRED = "ScheduleFired"
SCHEDULE_SKIPPED = "ScheduleSkipped"
SCHEDULE_RUN_ENDED = "ScheduleRunEnded"
SCHEDULE_PAUSED = "SchedulePaused"
SCHEDULE_RESUMED = "ScheduleResumed"
# Child workflows (decisions.md §18).
CHILDREN_STARTED = "ChildrenStarted"
CHILD_COMPLETED = "ChildCompleted"
EXECUTION_RESUMED = "ExecutionResumed"
EXECUTION_MIGRATED = "ExecutionMigrated"
# Concurrency and rate limits (decisions.md §20).
EXECUTION_QUEUED = "ExecutionQueued"
EXECUTION_ADMITTED = "ExecutionAdmitted"
STEP_ADMITTED = "StepAdmitted"
LIMIT_SET = "LimitSet"
PERMIT_GRANTED = "PermitGranted"
PERMIT_QUEUED = "PermitQueued"
PERMIT_RELEASED = "PermitReleased"
PERMIT_DENIED = "PermitDenied"

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
        EXECUTION_BLOCKED,
        EXECUTION_RESUMED,
        EXECUTION_MIGRATED,
        STEP_PENDING,
        CHILDREN_STARTED,
        CHILD_COMPLETED,
        SCHEDULE_FIRED,
        SCHEDULE_SKIPPED,
        SCHEDULE_RUN_ENDED,
        SCHEDULE_PAUSED,
        SCHEDULE_RESUMED,
        EXECUTION_QUEUED,
        EXECUTION_ADMITTED,
        STEP_ADMITTED,
        LIMIT_SET,
        PERMIT_GRANTED,
        PERMIT_QUEUED,
        PERMIT_RELEASED,
        PERMIT_DENIED,
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


def traceback_text(
    exc: BaseException,
    limit: int = MAX_TRACEBACK_BYTES,
    outer: Callable[[str], bool] | None = None,
) -> str:
    """`exc`'s formatted traceback, cut to `limit` bytes (UTF-8) at line boundaries: the first
    line and the innermost frames (the end, where the error was raised) are kept. The
    outermost frames whose file name `outer` accepts are left out (the machinery that called
    the step, not the step), though never the last frame."""
    tb = exc.__traceback__
    if outer is not None:
        while tb is not None and tb.tb_next is not None and outer(tb.tb_frame.f_code.co_filename):
            tb = tb.tb_next
    text = "".join(_traceback.format_exception(type(exc), exc, tb))
    return truncate_traceback(text, limit)


def truncate_traceback(text: str, limit: int = MAX_TRACEBACK_BYTES) -> str:
    """`text` if it fits in `limit` bytes, else its first line, a marker naming how much was
    cut, and as many of its last lines as fit (a single last line too long is cut from its
    start)."""
    if len(text.encode()) <= limit:
        return text
    lines = text.splitlines(keepends=True)
    head = lines[0] if len(lines[0].encode()) <= limit // 4 else ""
    marker = "  ... ({} bytes cut) ...\n"
    budget = limit - len(head.encode()) - len(marker.format(len(text.encode())).encode())
    kept: list[str] = []
    size = 0
    for line in reversed(lines[1:] if head else lines):
        n = len(line.encode())
        if size + n > budget:
            if not kept:  # one huge last line (a long message): keep its end
                tail = line.encode()[-budget:].decode(errors="ignore") if budget > 0 else ""
                kept.append(tail)
                size += len(tail.encode())
            break
        kept.append(line)
        size += n
    body = "".join(reversed(kept))
    cut = len(text.encode()) - len(head.encode()) - len(body.encode())
    return head + marker.format(cut) + body
