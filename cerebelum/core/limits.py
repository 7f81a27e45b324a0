"""Concurrency and rate limits (decisions.md §20). Pure; `d` is the deciding machine._Decider.

A limit lives in an execution of its own, a *limiter* of the built-in workflow
`cerebelum.limiter`, one per key, on the key's own partition:

    concurrency.<workflow>.<key>   at most `limit` live executions of the workflow per key
    rate.<name>.<key>              at most `limit` runs of the step per `per_ms` per key

It talks with its holders through Permit commands, each produced in the transaction that
records the decision behind it, so a permit is asked for, granted and given back exactly
once whatever fails, and the limiter's state (its holders and its queue, in its results) is
restored like any execution's:

1. a holder asks (`acquire`): a workflow with a `concurrency_key` when it starts
   (ExecutionQueued, status queued), a step with a `rate_limit` each time it is scheduled
   (StepScheduled with `limiter`, its run held back);
2. the limiter grants at once (PermitGranted, a `grant` to the holder) or queues it in order
   (PermitQueued); a rate limiter grants the next in line when its window allows, on a timer;
3. the holder goes on (ExecutionAdmitted: it enters its first node; StepAdmitted: the step
   runs); a concurrency holder gives its permit back when it ends (`release`: PermitReleased,
   and the next in line gets it), whatever way it ends, queued or running.

A limiter never ends: it cannot be cancelled or signalled, and its history is not bounded by
MAX_HISTORY (its state is: at most MAX_LIMIT holders and MAX_QUEUE waiting).
"""

from __future__ import annotations

import hashlib
from typing import Any

from cerebelum.core import events as ev
from cerebelum.core.commands import (
    CancelExecution,
    Input,
    Permit,
    Recover,
    SendSignal,
    StartExecution,
    TimerDue,
)
from cerebelum.core.ids import MAX_ID_LENGTH, is_valid_id
from cerebelum.core.state import BLOCKED, QUEUED, Execution
from cerebelum.core.workflow import Step, Workflow, key_of
from cerebelum.errors import InvalidCommand

LIMITER_WORKFLOW = "cerebelum.limiter"
LIMITER_VERSION = "1"
CONCURRENCY = "concurrency"
RATE = "rate"
# Holders waiting in one limiter at most; past it a request is denied (its execution fails
# with LimitExceeded): the queue lives in the limiter's state, under the 2 MiB snapshot limit.
MAX_QUEUE = 10_000


def limiter_id(kind: str, scope: str, key: str) -> str:
    """`<kind>.<scope>.<key>`; the key hashed when the id would not be a valid one."""
    lid = f"{kind}.{scope}.{key}"
    if is_valid_id(lid):
        return lid
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{kind}.{scope[: MAX_ID_LENGTH - 60]}.{digest}"


# -- the holders' side ------------------------------------------------------------------------


def queue_start(d: Any, wf: Workflow) -> bool:
    """A start of a workflow with a concurrency limit: queue it (True), or fail it with a
    clear error when its inputs give no key (True too); False when it has no limit."""
    if wf.concurrency_key is None:
        return False
    s: Execution = d.s
    try:
        key = key_of(wf.concurrency_key, s.inputs, f"the concurrency_key of {wf.name!r}")
    except Exception as exc:  # the user's function, or a missing field: a clear failure
        d.fail("ConcurrencyKeyError", _what(exc))
        return True
    lid = limiter_id(CONCURRENCY, wf.name, key)
    d.record(ev.EXECUTION_QUEUED, limiter=lid, key=key)
    d.effects.append(d.send(lid, Permit(lid, "acquire", s.id, limit=wf.concurrency_limit).encode()))
    return True


def schedule_step(d: Any, step: Step, index: int, attempt: int) -> bool:
    """Schedule a run of a rate-limited step: it waits for its permit (True); False when the
    step has no rate limit (the caller runs it at once)."""
    rate = step.rate_limit
    if rate is None:
        return False
    s: Execution = d.s
    try:
        key = key_of(rate.key, s.inputs, f"the rate_limit key of step {step.name!r}")
    except Exception as exc:
        d.fail("RateLimitKeyError", _what(exc), step.name)
        return True
    lid = limiter_id(RATE, rate.name or step.name, key)
    d.record(ev.STEP_SCHEDULED, step=step.name, node=index, attempt=attempt, limiter=lid)
    token = d.s.running[step.name]
    per_ms = max(1, round(rate.per_s * 1000))
    value = Permit(lid, "acquire", s.id, step.name, token, rate.limit, per_ms).encode()
    d.effects.append(d.send(lid, value))
    return True


def on_grant(d: Any, permit: Permit, definition: bool = True) -> None:
    """A holder's permit came (or was denied). Without a definition (`definition` False: the
    execution is blocked) it is only recorded; resuming goes on from there."""
    s: Execution = d.s
    blocked = {"blocked": True} if s.status == BLOCKED else {}
    if permit.step is None:
        queued = (s.blocked or {}).get("status") if s.status == BLOCKED else s.status
        if queued != QUEUED or s.limiter != permit.limiter:
            return
        if permit.denied is not None:
            d.fail("LimitExceeded", permit.denied)
            return
        d.record(ev.EXECUTION_ADMITTED, limiter=s.limiter, **blocked)
        if definition and not blocked:
            d.enter(0)
        return
    if s.awaiting.get(permit.step, (None,))[0] != permit.token:
        return  # a stale grant: the run it was for was left behind
    if permit.denied is not None:
        d.fail("LimitExceeded", permit.denied, permit.step)
        return
    d.record(ev.STEP_ADMITTED, step=permit.step, token=permit.token, **blocked)
    d.admitted.add(permit.step)
    if definition and not blocked:
        d.run(d.wf.steps[permit.step])


def give_back(d: Any, s: Execution) -> None:
    """After a decision: a concurrency holder that ended gives its permit back; a step run
    that waited for a permit and was left behind (its node left, its execution ended) leaves
    the queue."""
    if s.terminal and not d.was_terminal and s.limiter is not None:
        d.effects.append(d.send(s.limiter, Permit(s.limiter, "release", s.id).encode()))
    for step, (token, lid) in d.awaiting_before.items():
        if step not in d.admitted and s.awaiting.get(step, (None,))[0] != token:
            d.effects.append(d.send(lid, Permit(lid, "release", s.id, step, token).encode()))


def _what(exc: Exception) -> str:
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"


# -- the limiter ------------------------------------------------------------------------------


def start_limiter(d: Any, command: Permit) -> None:
    """The first permit a limiter hears of starts it (any later start is the same start)."""
    kind = RATE if command.per_ms is not None else CONCURRENCY
    d.record(ev.EXECUTION_STARTED, workflow=LIMITER_WORKFLOW, workflow_version=LIMITER_VERSION,
             inputs={"kind": kind}, execution_id=command.execution_id)  # fmt: skip
    d.record(ev.LIMIT_SET, limit=command.limit, per_ms=command.per_ms)


def refuse(command: Input, state: Execution | None) -> None:
    """Raise InvalidCommand for what a limiter never takes, or a permit for a non-limiter."""
    is_limiter = state is not None and state.workflow == LIMITER_WORKFLOW
    if isinstance(command, StartExecution) and command.workflow == LIMITER_WORKFLOW:
        raise InvalidCommand(
            "a cerebelum.limiter execution is started by its first permit, not by a start",
            command.execution_id,
        )
    if is_limiter and isinstance(command, (SendSignal, CancelExecution)):
        raise InvalidCommand(
            f"{command.execution_id!r} is a limiter: it holds permits for live executions and "
            "takes no signal or cancel",
            command.execution_id,
        )
    if isinstance(command, Permit) and command.op != "grant" and state is None:
        if not command.execution_id.startswith((CONCURRENCY + ".", RATE + ".")):
            raise InvalidCommand(
                f"a permit {command.op} for {command.execution_id!r}, which is no limiter's id",
                command.execution_id,
            )
    if isinstance(command, Permit) and command.op != "grant" and state is not None:
        if not is_limiter:
            raise InvalidCommand(
                f"a permit {command.op} for {command.execution_id!r}, which is no limiter",
                command.execution_id,
            )


def decide_limiter(d: Any, command: Input) -> None:
    s: Execution = d.s
    if isinstance(command, Permit):
        if command.op == "acquire":
            _acquire(d, command)
        elif command.op == "release":
            _release(d, command)
    elif isinstance(command, TimerDue):
        if command.timer_id in s.timers:
            d.record(ev.TIMER_FIRED, timer_id=command.timer_id)
            _grant_queued(d)
    elif isinstance(command, Recover):
        for timer_id, timer in s.timers.items():
            d.arm(timer_id, timer["fire_at"])


def _entry(command: Permit) -> list[Any]:
    return [command.holder, command.step, command.token]


def _acquire(d: Any, command: Permit) -> None:
    r = d.s.results
    if (command.limit, command.per_ms) != (r["limit"], r.get("per_ms")):
        d.record(ev.LIMIT_SET, limit=command.limit, per_ms=command.per_ms)
        _grant_queued(d)
    entry = _entry(command)
    r = d.s.results
    if entry in r["holders"] or entry in r["queue"]:
        return  # asked again: nothing new
    if not r["queue"] and _free(d):
        _grant(d, entry)
    elif len(r["queue"]) >= MAX_QUEUE:
        reason = f"limiter {d.s.id!r} already queues {MAX_QUEUE} holders"
        d.record(ev.PERMIT_DENIED, holder=command.holder, step=command.step,
                 token=command.token, reason=reason)  # fmt: skip
        d.effects.append(_grant_command(d, entry, denied=reason))
    else:
        d.record(ev.PERMIT_QUEUED, holder=command.holder, step=command.step, token=command.token)
        _arm_window(d)


def _release(d: Any, command: Permit) -> None:
    r = d.s.results
    entry = _entry(command)
    if entry in r["holders"] or entry in r["queue"]:
        d.record(ev.PERMIT_RELEASED, holder=command.holder, step=command.step,
                 token=command.token)  # fmt: skip
        _grant_queued(d)


def _free(d: Any) -> bool:
    """Whether one more permit may be granted now."""
    r = d.s.results
    limit: int = r["limit"]
    if r.get("per_ms") is None:
        return len(r["holders"]) < limit
    recent: list[int] = r["recent"]
    return len(recent) < limit or recent[-limit] <= d.now - r["per_ms"]


def _grant_queued(d: Any) -> None:
    while d.s.results["queue"] and _free(d):
        _grant(d, d.s.results["queue"][0])
    _arm_window(d)


def _grant(d: Any, entry: list[Any]) -> None:
    holder, step, token = entry
    d.record(ev.PERMIT_GRANTED, holder=holder, step=step, token=token)
    d.effects.append(_grant_command(d, entry))


def _grant_command(d: Any, entry: list[Any], denied: str | None = None) -> Any:
    holder, step, token = entry
    value = Permit(holder, "grant", holder, step, token, denied=denied, limiter=d.s.id).encode()
    return d.send(holder, value)


def _arm_window(d: Any) -> None:
    """A rate limiter with a queue: a timer for when its window lets the next one in."""
    s: Execution = d.s
    r = s.results
    if not r["queue"] or r.get("per_ms") is None or s.timers:
        return
    fire_at = r["recent"][-r["limit"]] + r["per_ms"]
    timer_id = f"window:{fire_at}"
    d.record(ev.TIMER_STARTED, timer_id=timer_id, fire_at=fire_at, step="window", node=0,
             purpose="window")  # fmt: skip
    d.arm(timer_id, fire_at)
