"""Runs steps: async steps as tasks, plain ones in a thread pool, with bounded concurrency;
a step marked isolated (a crash suspect) in a child process (cerebelum.worker.isolation).

Every run ends in exactly one StepOutcome handed to `report`, whatever the step does: a
result, an exception, a timeout, or a result that cannot be encoded or is too large.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from cerebelum.core.commands import StepOutcome
from cerebelum.core.events import error_info, exception_info
from cerebelum.core.machine import RunStep
from cerebelum.errors import LimitExceeded
from cerebelum.worker.isolation import run_isolated

log = logging.getLogger(__name__)

Report = Callable[[StepOutcome], None]

# A step result larger than this fails the step (not retried): results travel in every state
# snapshot of the execution, and Kafka's default record limit is 1 MiB.
MAX_RESULT_BYTES = 256 * 1024


class StepRunner:
    def __init__(self, max_concurrent: int, threads: int = 32) -> None:
        # Plain (sync) steps block a thread each; 32 threads keep I/O-bound sync steps moving
        # without letting CPU-bound ones starve the event loop's own thread.
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cerebelum-step")
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: set[asyncio.Task[None]] = set()
        # Set by drain(): the worker is stopping, so steps dispatched from now on are left to
        # the partition's next owner, which re-runs every scheduled, unrecorded step.
        self._closing = False

    def submit(self, effect: RunStep, report: Report) -> None:
        if self._closing:
            return
        task = asyncio.get_running_loop().create_task(self._run(effect, report))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def _run(self, effect: RunStep, report: Report) -> None:
        async with self._slots:
            if effect.isolated:
                outcome = await run_isolated(effect)
            else:
                outcome = await run_step(effect, self._pool)
        report(outcome)

    async def drain(self, timeout: float) -> None:
        """Start no more steps; wait up to `timeout` seconds for running ones, cancel the rest."""
        self._closing = True
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for t in pending:
                t.cancel()

    def close(self) -> None:
        """Release the thread pool, once no owner can dispatch a step any more."""
        self._pool.shutdown(wait=False, cancel_futures=True)


async def run_step(effect: RunStep, pool: ThreadPoolExecutor) -> StepOutcome:
    step = effect.step
    try:
        if step.is_async:
            call = step.fn(**effect.kwargs)
        else:
            call = asyncio.get_running_loop().run_in_executor(
                pool, lambda: step.fn(**effect.kwargs)
            )
        value = await asyncio.wait_for(call, step.timeout) if step.timeout else await call
        check_result(value)
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        # A plain step's thread cannot be stopped: it runs on, and its result is dropped.
        error = error_info(
            "StepTimeout",
            f"step {step.name!r} did not finish within {step.timeout}s",
            types=["StepTimeout", "TimeoutError"],
        )
        return StepOutcome(effect.execution_id, step.name, effect.token, ok=False, error=error)
    except Exception as exc:  # a step's own failure is data, recorded as StepFailed
        return StepOutcome(
            effect.execution_id, step.name, effect.token, ok=False, error=exception_info(exc)
        )
    return StepOutcome(effect.execution_id, step.name, effect.token, ok=True, value=value)


def check_result(value: Any) -> None:
    """Refuse a result that cannot be recorded: not JSON, or too large."""
    try:
        size = len(orjson.dumps(value))
    except TypeError as exc:
        raise TypeError(f"step result is not JSON-serialisable: {exc}") from None
    if size > MAX_RESULT_BYTES:
        raise LimitExceeded("step result", size, MAX_RESULT_BYTES)
