"""Runs steps: async steps as tasks, plain ones in a thread pool, with bounded concurrency;
a step marked isolated (a crash suspect) in a child process (cerebelum.worker.isolation).

Every run ends in exactly one StepOutcome handed to `report`, whatever the step does: a
result, an exception, a timeout, or a result that cannot be encoded or is too large. A run
is bounded by its step's `timeout` (else the worker's default, CEREBELUM_STEP_TIMEOUT_S) and,
for a step declared with `heartbeat_timeout`, by the silence since its last `ctx.heartbeat()`.
When its execution ends meanwhile (cancelled, or failed in another branch), `cancel` stops
the run: an async step's task is cancelled, a plain step sees `ctx.cancelled` (a thread cannot
be stopped from outside) and its result is dropped; no outcome is reported. A step
that raises is logged with its traceback, and the traceback (bounded) rides on the outcome
into its StepFailed event.

Each run happens in a log context naming its execution, workflow and step (the thread a plain
step runs in inherits it), so the user's own log lines carry them too. With tracing on, each
run is a span (cerebelum.telemetry.tracing), current while the step runs, so spans the step's
own code makes are its children; off, the run pays one `is None` test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import orjson

from cerebelum.core.commands import StepOutcome
from cerebelum.core.events import error_info, exception_info, traceback_text
from cerebelum.core.machine import RunStep
from cerebelum.core.workflow import Pending, StepContext, StepLive
from cerebelum.errors import LimitExceeded
from cerebelum.telemetry.logs import set_log_context
from cerebelum.worker.isolation import run_isolated

if TYPE_CHECKING:
    from cerebelum.telemetry.tracing import Tracing

log = logging.getLogger(__name__)

Report = Callable[[StepOutcome], None]
# Told each run's workflow, step and duration in seconds (the worker's metrics).
Observe = Callable[[str, str, float], None]

# A step result larger than this fails the step (not retried): results travel in every state
# snapshot of the execution, and Kafka's default record limit is 1 MiB.
MAX_RESULT_BYTES = 256 * 1024


class StepRunner:
    def __init__(
        self,
        max_concurrent: int,
        threads: int = 32,
        observe: Observe | None = None,
        tracing: Tracing | None = None,
        default_timeout: float | None = None,
    ) -> None:
        # Plain (sync) steps block a thread each; 32 threads keep I/O-bound sync steps moving
        # without letting CPU-bound ones starve the event loop's own thread.
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cerebelum-step")
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: set[asyncio.Task[None]] = set()
        # Set by drain(): the worker is stopping, so steps dispatched from now on are left to
        # the partition's next owner, which re-runs every scheduled, unrecorded step.
        self._closing = False
        self._observe = observe
        self._tracing = tracing
        self._default_timeout = default_timeout
        # The runs going on per execution, so that `cancel` can stop them.
        self._by_execution: dict[str, set[tuple[asyncio.Task[None], StepLive | None]]] = {}

    def submit(self, effect: RunStep, report: Report, partition: int | None = None) -> None:
        """Run `effect` (on `partition`, named in its log lines) and hand `report` its outcome."""
        if self._closing:
            return
        task = asyncio.get_running_loop().create_task(self._run(effect, report, partition))
        self._tasks.add(task)
        ctx = effect.kwargs.get("ctx")
        entry = (task, ctx.live if isinstance(ctx, StepContext) else None)
        runs = self._by_execution.setdefault(effect.execution_id, set())
        runs.add(entry)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            runs.discard(entry)
            if not runs and self._by_execution.get(effect.execution_id) is runs:
                del self._by_execution[effect.execution_id]

        task.add_done_callback(done)

    def cancel(self, execution_id: str) -> int:
        """Stop the runs of an execution that has ended; how many there were."""
        runs = self._by_execution.pop(execution_id, set())
        for task, live in runs:
            if live is not None:
                live.cancelled = True
            task.cancel()
        return len(runs)

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def _run(self, effect: RunStep, report: Report, partition: int | None) -> None:
        # This task's own context: set once, seen by every line logged during the run.
        set_log_context(
            execution_id=effect.execution_id, workflow=effect.workflow, step=effect.step.name,
            partition=partition,
        )  # fmt: skip
        async with self._slots:
            started = time.perf_counter()
            if self._tracing is not None:
                outcome = await self._run_traced(effect, partition, self._tracing)
            elif effect.isolated:
                outcome = await run_isolated(effect, self._default_timeout)
            else:
                outcome = await run_step(effect, self._pool, self._default_timeout)
            if self._observe is not None:
                self._observe(effect.workflow, effect.step.name, time.perf_counter() - started)
        if not outcome.ok:
            _log_failure(effect, outcome, partition)
        report(outcome)

    async def _run_traced(
        self, effect: RunStep, partition: int | None, tracing: Tracing
    ) -> StepOutcome:
        span = tracing.start_step(effect, partition)
        if span is None:  # tracing failed (and said so): the step runs all the same
            if effect.isolated:
                return await run_isolated(effect, self._default_timeout)
            return await run_step(effect, self._pool, self._default_timeout)
        token = tracing.activate(span)
        try:
            if effect.isolated:
                outcome = await run_isolated(effect, self._default_timeout)
            else:
                outcome = await run_step(effect, self._pool, self._default_timeout)
        except asyncio.CancelledError:  # the worker stops: the next owner runs it again
            tracing.abandon_step(span)
            raise
        finally:
            tracing.deactivate(token)
        tracing.end_step(span, outcome)
        return outcome

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


class HeartbeatTimeout(Exception):
    """A run went longer than its step's heartbeat_timeout without a heartbeat."""


async def run_step(
    effect: RunStep, pool: ThreadPoolExecutor, default_timeout: float | None = None
) -> StepOutcome:
    step = effect.step
    timeout = step.timeout or default_timeout
    ctx = effect.kwargs.get("ctx")
    try:
        if step.is_async:
            call = step.fn(**effect.kwargs)
        else:
            context = contextvars.copy_context()  # the thread logs in the step's context
            call = asyncio.get_running_loop().run_in_executor(
                pool, lambda: context.run(step.fn, **effect.kwargs)
            )
        if step.heartbeat_timeout and isinstance(ctx, StepContext):
            value = await _watched(call, ctx.live, step.heartbeat_timeout, timeout)
        else:
            # asyncio.timeout, not wait_for: no task of its own per run (every run has a
            # timeout now, the worker's default at least), just a timer on this one.
            async with asyncio.timeout(timeout):
                value = await call
        if isinstance(value, Pending):  # ctx.pending(): completed later from outside
            return StepOutcome(
                effect.execution_id, step.name, effect.token, ok=True, pending=value.timeout
            )
        check_result(value)
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        # A plain step's thread cannot be stopped: it runs on, and its result is dropped.
        error = error_info(
            "StepTimeout",
            f"step {step.name!r} did not finish within {timeout}s",
            types=["StepTimeout", "TimeoutError"],
        )
        return StepOutcome(effect.execution_id, step.name, effect.token, ok=False, error=error)
    except HeartbeatTimeout:
        live = ctx.live if isinstance(ctx, StepContext) else None
        last = f"; its last heartbeat said {live.details!r}" if live and live.details else ""
        error = error_info(
            "StepHeartbeatTimeout",
            f"step {step.name!r} sent no heartbeat for {step.heartbeat_timeout}s{last}"[:1000],
            types=["StepHeartbeatTimeout", "StepTimeout", "TimeoutError"],
        )
        return StepOutcome(effect.execution_id, step.name, effect.token, ok=False, error=error)
    except Exception as exc:  # a step's own failure is data, recorded as StepFailed
        return StepOutcome(
            effect.execution_id, step.name, effect.token, ok=False, error=exception_info(exc),
            traceback=traceback_text(exc, outer=is_machinery),
        )  # fmt: skip
    return StepOutcome(effect.execution_id, step.name, effect.token, ok=True, value=value)


async def _watched(
    call: Awaitable[Any], live: StepLive, heartbeat_timeout: float, timeout: float | None
) -> Any:
    """Await `call`, giving up when `live` has had no heartbeat for `heartbeat_timeout` s
    (HeartbeatTimeout) or after `timeout` s in all (TimeoutError)."""
    run = asyncio.ensure_future(call)
    loop = asyncio.get_running_loop()
    # The run's own clock: a heartbeat of a previous attempt's context does not count.
    live.last_beat = time.monotonic()
    end = loop.time() + timeout if timeout else math.inf
    try:
        while True:
            silent_until = live.last_beat + heartbeat_timeout  # monotonic, as loop.time()
            wake = min(silent_until, end)
            done, _ = await asyncio.wait({run}, timeout=max(wake - loop.time(), 0))
            if done:
                return run.result()
            now = loop.time()
            if now >= end:
                raise TimeoutError
            if now >= live.last_beat + heartbeat_timeout:
                raise HeartbeatTimeout
    finally:
        if not run.done():
            run.cancel()  # an async step stops; a thread runs on, its result dropped


# Where the frames that call a step come from: this package's worker and the standard library's
# asyncio and thread pool. A step's recorded traceback starts below them, at the step.
_MACHINERY = tuple(
    os.path.dirname(path) + os.sep
    for path in (__file__, asyncio.__file__, concurrent.futures.__file__)
)


def is_machinery(filename: str) -> bool:
    """Whether a frame of file `filename` is the worker's or the stdlib's, not a step's."""
    return filename.startswith(_MACHINERY)


def check_result(value: Any) -> None:
    """Refuse a result that cannot be recorded: not JSON, or too large."""
    try:
        size = len(orjson.dumps(value))
    except TypeError as exc:
        raise TypeError(f"step result is not JSON-serialisable: {exc}") from None
    if size > MAX_RESULT_BYTES:
        raise LimitExceeded("step result", size, MAX_RESULT_BYTES)


def _log_failure(effect: RunStep, outcome: StepOutcome, partition: int | None) -> None:
    """One line per failed run, naming its execution, workflow, step and partition, with its
    traceback (where `exc_info` would put one, from the text the outcome carries)."""
    error = outcome.error or {}
    context = {"execution_id": effect.execution_id, "workflow": effect.workflow,
               "step": effect.step.name, "partition": partition}  # fmt: skip
    if outcome.traceback:
        context["traceback"] = outcome.traceback
    log.warning(
        "step %s of %s (%s, attempt %d) failed: %s: %s",
        effect.step.name, effect.execution_id, effect.workflow, effect.attempt,
        error.get("type", "Error"), error.get("message", ""), extra=context,
    )  # fmt: skip
