"""Running one step in a child process, so a step that kills its process kills only the child.

Used for steps that were in flight when their worker died twice in a row (RunStep.isolated,
see cerebelum.core.machine.ISOLATE_AFTER_REDISPATCHES): the likely culprit. The child is
forked, so it has the step's code and arguments without pickling them; it runs the step and
sends back its outcome through a pipe. A child that dies first (os._exit, a signal, the OOM
killer) becomes a StepCrashed failure, which the step's retry policy and diverge rules then
handle like any other error. A child past the step's timeout is killed: unlike a plain step's
thread, an isolated step really stops.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from multiprocessing.connection import Connection
from typing import Any

from cerebelum.core.commands import StepOutcome
from cerebelum.core.events import error_info, exception_info, traceback_text
from cerebelum.core.machine import RunStep
from cerebelum.core.workflow import Pending

# fork: the child must have the step's function and arguments, which may not pickle.
_FORK = multiprocessing.get_context("fork")


async def run_isolated(effect: RunStep, default_timeout: float | None = None) -> StepOutcome:
    """Run the step in a forked child, killed past its timeout. A heartbeat from the child
    cannot reach this process, so an isolated run is bounded by its timeout alone."""
    step = effect.step
    timeout = step.timeout or default_timeout
    receiver, sender = _FORK.Pipe(duplex=False)
    child = _FORK.Process(target=_child, args=(effect, sender), daemon=True)
    child.start()
    sender.close()
    try:
        reply = await asyncio.to_thread(_wait, receiver, timeout)
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()  # timed out (or we are being cancelled): an isolated step can stop
        await asyncio.to_thread(child.join)
    traceback = None
    if reply is _TIMED_OUT:
        error = error_info(
            "StepTimeout",
            f"step {step.name!r} did not finish within {timeout}s (isolated: killed)",
            types=["StepTimeout", "TimeoutError"],
        )
    elif reply is _DIED:
        error = error_info(
            "StepCrashed",
            f"the process running step {step.name!r} (attempt {effect.attempt}, isolated "
            f"after its worker died with it in flight) died: {_describe(child.exitcode)}",
            types=["StepCrashed"],
        )
    else:
        ok, payload = reply
        if ok and isinstance(payload, Pending):  # ctx.pending(): completed from outside
            return StepOutcome(
                effect.execution_id, step.name, effect.token, ok=True, pending=payload.timeout
            )
        if ok:
            return StepOutcome(effect.execution_id, step.name, effect.token, ok=True, value=payload)
        error, traceback = payload
    return StepOutcome(
        effect.execution_id, step.name, effect.token, ok=False, error=error, traceback=traceback
    )


_DIED = ("died", None)
_TIMED_OUT = ("timed out", None)


def _wait(receiver: Connection, timeout: float | None) -> tuple[Any, Any]:
    """The child's reply (True, value) or (False, (error, traceback)), or _DIED, or
    _TIMED_OUT."""
    if not receiver.poll(timeout):
        return _TIMED_OUT
    try:
        reply: tuple[bool, Any] = receiver.recv()
    except EOFError:  # the pipe closed without a reply: the child died
        return _DIED
    return reply


def _describe(exitcode: int | None) -> str:
    if exitcode is None:
        return "no exit status"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _child(effect: RunStep, sender: Connection) -> None:
    from cerebelum.worker.runner import check_result, is_machinery

    # The fork copied the parent's running event loop marker; this process has no loop.
    asyncio.events._set_running_loop(None)
    try:
        value = effect.step.fn(**effect.kwargs)
        if asyncio.iscoroutine(value):
            value = asyncio.run(value)
        if not isinstance(value, Pending):
            check_result(value)
        reply: tuple[bool, Any] = (True, value)
    except BaseException as exc:  # noqa: BLE001 - the step's own failure is data
        reply = (False, (exception_info(exc), traceback_text(exc, outer=is_machinery)))
    try:
        sender.send(reply)
    finally:
        sender.close()
        os._exit(0)
