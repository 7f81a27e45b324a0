"""External completion (decisions.md §17): a step run that returned ctx.pending() waits for a
CompleteStep from outside, carrying its run's token. Pure; `d` is the deciding
machine._Decider."""

from __future__ import annotations

from typing import Any

from cerebelum.core import events as ev
from cerebelum.core.commands import CompleteStep
from cerebelum.core.events import error_info
from cerebelum.core.state import Execution
from cerebelum.errors import InvalidCommand


def check(state: Execution, command: CompleteStep) -> None:
    """Raise InvalidCommand unless `command` completes a step that awaits it, with its run's
    token: so a step is completed once, and never by a completion meant for another run."""
    token = state.pending.get(command.step)
    if token == command.token:
        return
    where = f"execution {command.execution_id!r}"
    if token is not None:
        problem = (
            f"step {command.step!r} of {where} awaits the completion of run {token}, not "
            f"{command.token} (an earlier attempt's token)"
        )
    elif command.step in state.running:
        problem = f"step {command.step!r} of {where} is running, not awaiting a completion"
    else:
        problem = (
            f"step {command.step!r} of {where} awaits no completion (completed already, timed "
            "out, or never pending)"
        )
    raise InvalidCommand(problem, command.execution_id)


def pend(
    d: Any, name: str, attempt: int, token: int, timeout_s: float, ran_by: dict[str, str]
) -> None:
    """The run handed the step to another system (ctx.pending): await its CompleteStep,
    until a durable timer fails it with StepTimeout (none if `timeout_s` is 0)."""
    s = d.s
    timer: dict[str, Any] = {}
    if timeout_s > 0:
        timer = {"timer_id": f"pending:{name}:{s.version + 1}",
                 "fire_at": d.now + round(timeout_s * 1000)}  # fmt: skip
    d.record(ev.STEP_PENDING, step=name, attempt=attempt, token=token, **timer, **ran_by)
    if timer:
        d.arm(timer["timer_id"], timer["fire_at"])


def complete(d: Any, command: CompleteStep) -> None:
    """An outside system completed a pending step (checked by `check`)."""
    name = command.step
    attempt = d.s.attempts[name]
    if command.ok:
        d.record(ev.STEP_COMPLETED, step=name, attempt=attempt, result=command.value)
        d.after_completed(name, attempt)
    else:
        error = command.error or error_info("Error", "completed with an error")
        d.record(ev.STEP_FAILED, step=name, attempt=attempt, error=error)
        d.after_failed(name, attempt, error)
