"""How long a step run may go (cerebelum.worker.runner), without Kafka: the worker's default
timeout, heartbeats and their timeout, and stopping the runs of an execution that ended."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from cerebelum.core.commands import StepOutcome
from cerebelum.core.machine import RunStep
from cerebelum.core.workflow import Step, StepContext, step
from cerebelum.worker.runner import StepRunner


def context(name: str) -> StepContext:
    return StepContext("e-1", "wf", "v1", name, 1)


async def outcome_of(
    s: Step, kwargs: dict, default_timeout: float | None = None, within: float = 10
) -> StepOutcome:
    runner = StepRunner(4, threads=2, default_timeout=default_timeout)
    done: asyncio.Future[StepOutcome] = asyncio.get_running_loop().create_future()
    runner.submit(RunStep("e-1", s, 1, 7, kwargs, workflow="wf"), done.set_result)
    try:
        return await asyncio.wait_for(done, within)
    finally:
        runner.close()


@step(heartbeat_timeout=0.3)
async def beats_then_hangs(ctx: StepContext) -> str:
    for i in range(3):
        ctx.heartbeat({"done": i})
        await asyncio.sleep(0.1)
    await asyncio.sleep(60)
    return "never"


@step(heartbeat_timeout=0.3)
async def beats_for_a_second(ctx: StepContext) -> str:
    for _ in range(10):
        ctx.heartbeat()
        await asyncio.sleep(0.1)
    return "done"


@step(heartbeat_timeout=0.3)
def plain_beats_then_hangs(ctx: StepContext) -> str:
    ctx.heartbeat("started")
    time.sleep(1.5)  # a thread cannot be stopped: it runs on, its result dropped
    return "late"


async def test_a_step_silent_past_its_heartbeat_timeout_fails_naming_its_last_heartbeat() -> None:
    started = time.monotonic()
    out = await outcome_of(beats_then_hangs, {"ctx": context("beats_then_hangs")})
    elapsed = time.monotonic() - started
    assert not out.ok and out.error is not None
    assert out.error["type"] == "StepHeartbeatTimeout"
    assert "StepTimeout" in out.error["types"]  # a diverge rule on StepTimeout catches it
    assert "{'done': 2}" in out.error["message"]
    # Last beat at ~0.2 s, silent for 0.3 s: given up at ~0.5 s, not at the first beat's 0.3.
    assert 0.45 <= elapsed < 2.0


async def test_heartbeats_keep_a_run_going_past_its_heartbeat_timeout() -> None:
    out = await outcome_of(beats_for_a_second, {"ctx": context("beats_for_a_second")})
    assert out.ok and out.value == "done"


async def test_a_plain_step_is_watched_too() -> None:
    out = await outcome_of(plain_beats_then_hangs, {"ctx": context("plain_beats_then_hangs")})
    assert not out.ok and out.error is not None
    assert out.error["type"] == "StepHeartbeatTimeout" and "'started'" in out.error["message"]


@step
async def sleeps(inputs: dict) -> str:
    await asyncio.sleep(inputs["s"])
    return "woke"


@step(timeout=5)
async def sleeps_with_own_timeout(inputs: dict) -> str:
    await asyncio.sleep(inputs["s"])
    return "woke"


async def test_the_workers_default_timeout_bounds_a_step_without_one() -> None:
    out = await outcome_of(sleeps, {"inputs": {"s": 30}}, default_timeout=0.2)
    assert not out.ok and out.error is not None and out.error["type"] == "StepTimeout"
    assert "0.2s" in out.error["message"]


async def test_a_steps_own_timeout_wins_over_the_default() -> None:
    out = await outcome_of(sleeps_with_own_timeout, {"inputs": {"s": 0.5}}, default_timeout=0.2)
    assert out.ok and out.value == "woke"


async def test_cancel_stops_an_async_run_and_reports_nothing() -> None:
    stopped = asyncio.Event()

    @step
    async def long_async(ctx: StepContext) -> str:
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()
        return "never"

    runner = StepRunner(4, threads=2)
    reported: list[StepOutcome] = []
    runner.submit(RunStep("e-9", long_async, 1, 3, {"ctx": context("long_async")}), reported.append)
    await asyncio.sleep(0.1)
    assert runner.cancel("e-9") == 1
    await asyncio.wait_for(stopped.wait(), 2)
    await asyncio.sleep(0.05)
    assert reported == [] and runner.running == 0
    assert runner.cancel("e-9") == 0  # nothing left to stop
    runner.close()


async def test_cancel_tells_a_plain_run_through_ctx_cancelled() -> None:
    saw_cancel = threading.Event()

    @step
    def long_plain(ctx: StepContext) -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if ctx.cancelled:
                saw_cancel.set()
                return "stopped"
            time.sleep(0.02)
        return "never told"

    runner = StepRunner(4, threads=2)
    reported: list[StepOutcome] = []
    ctx = context("long_plain")
    runner.submit(RunStep("e-8", long_plain, 1, 3, {"ctx": ctx}), reported.append)
    await asyncio.sleep(0.1)
    assert not ctx.cancelled
    assert runner.cancel("e-8") == 1
    assert await asyncio.to_thread(saw_cancel.wait, 2)
    assert ctx.cancelled and reported == []
    runner.close()


async def test_cancel_leaves_other_executions_runs_alone() -> None:
    runner = StepRunner(4, threads=2)
    reported: list[StepOutcome] = []
    runner.submit(RunStep("e-a", sleeps, 1, 3, {"inputs": {"s": 0.2}}), reported.append)
    runner.submit(RunStep("e-b", sleeps, 1, 3, {"inputs": {"s": 0.2}}), reported.append)
    await asyncio.sleep(0.05)
    assert runner.cancel("e-a") == 1
    await asyncio.sleep(0.4)
    assert [o.execution_id for o in reported] == ["e-b"]
    runner.close()


def test_a_heartbeat_timeout_needs_ctx_and_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="takes no 'ctx'"):

        @step(heartbeat_timeout=5)
        def no_ctx(inputs: dict) -> None: ...

    with pytest.raises(ValueError, match="timeout must be a positive number"):

        @step(timeout=0)
        def zero(inputs: dict) -> None: ...

    with pytest.raises(ValueError, match="heartbeat_timeout must be a positive number"):

        @step(heartbeat_timeout=-1)
        def negative(ctx: StepContext) -> None: ...


def test_the_heartbeat_timeout_is_part_of_a_steps_shape_only_when_set() -> None:
    def f(ctx: StepContext) -> None: ...

    assert Step(f).shape() == "f(ctx)"  # as before heartbeats existed: versions unchanged
    assert Step(f, heartbeat_timeout=30).shape() == "f(ctx)hb30"


def test_the_default_timeout_comes_from_the_environment() -> None:
    from cerebelum.config import Settings
    from cerebelum.errors import ConfigurationError

    assert Settings.from_env({}).step_timeout_s == 3600
    assert Settings.from_env({"CEREBELUM_STEP_TIMEOUT_S": "0"}).step_timeout_s == 0  # none
    assert Settings.from_env({"CEREBELUM_STEP_TIMEOUT_S": "90.5"}).step_timeout_s == 90.5
    for bad in ("-1", "soon", "inf", "nan"):
        with pytest.raises(ConfigurationError, match="CEREBELUM_STEP_TIMEOUT_S"):
            Settings.from_env({"CEREBELUM_STEP_TIMEOUT_S": bad})
