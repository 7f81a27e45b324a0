"""A deterministic in-memory driver for the pure core: runs an execution to its end by feeding
decide() its own effects, with scripted signals and a simulated clock. No Kafka, no worker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from cerebelum.core.apply import fold
from cerebelum.core.commands import (
    CompleteStep,
    SendSignal,
    StartExecution,
    StepOutcome,
    TimerDue,
)
from cerebelum.core.events import Event, exception_info
from cerebelum.core.machine import ArmTimer, RunStep, decide
from cerebelum.core.state import Execution
from cerebelum.core.workflow import Pending, Registry

START = 1_700_000_000_000  # a fixed epoch-ms start, so golden logs do not depend on the clock


def run_step(effect: RunStep) -> StepOutcome:
    step = effect.step
    try:
        value = step.fn(**effect.kwargs)
        if asyncio.iscoroutine(value):
            value = asyncio.run(value)
    except Exception as exc:
        return StepOutcome(
            effect.execution_id, step.name, effect.token, False, error=exception_info(exc)
        )
    if isinstance(value, Pending):
        return StepOutcome(
            effect.execution_id, step.name, effect.token, True, pending=value.timeout
        )
    return StepOutcome(effect.execution_id, step.name, effect.token, True, value)


def simulate(
    registry: Registry,
    workflow: str,
    inputs: Any,
    execution_id: str = "e-1",
    signals: dict[str, list[Any]] | None = None,
    runner: Callable[[RunStep], StepOutcome] = run_step,
    max_inputs: int = 10_000,
    completions: dict[str, list[tuple[bool, Any]]] | None = None,
) -> tuple[Execution, list[Event]]:
    """Run to the end. `signals` are sent (in order) whenever the execution waits for them;
    `completions` (step -> (ok, result or error), in order) complete its pending steps."""
    state, log, effects = decide(
        None, StartExecution(execution_id, workflow, inputs), START, registry
    )
    assert state is not None
    state, log, _ = drive(
        registry, state, log, effects, START, signals, runner, max_inputs,
        completions=completions,
    )  # fmt: skip
    return state, log


def drive(
    registry: Registry,
    state: Execution,
    log: list[Event],
    effects: list[Any],
    now: int,
    signals: dict[str, list[Any]] | None = None,
    runner: Callable[[RunStep], StepOutcome] = run_step,
    max_inputs: int = 10_000,
    stop: Callable[[Execution], bool] | None = None,
    completions: dict[str, list[tuple[bool, Any]]] | None = None,
) -> tuple[Execution, list[Event], int]:
    """Feed decide() the effects it asked for (and `signals` when waited for) until nothing is
    left to do, or `stop(state)` holds; returns the state, the whole log and the clock."""
    signals = {k: list(v) for k, v in (signals or {}).items()}
    completions = {k: list(v) for k, v in (completions or {}).items()}
    log = list(log)
    timers: list[ArmTimer] = []
    steps: list[RunStep] = []
    for _ in range(max_inputs):
        for e in effects:
            (steps if isinstance(e, RunStep) else timers).append(e)
        assert state is not None
        if stop is not None and stop(state):
            break
        if steps:
            command: Any = runner(steps.pop(0))
            now += 1
        elif state.waiting and signals.get(state.waiting):
            command = SendSignal(state.id, state.waiting, signals[state.waiting].pop(0))
            now += 1
        elif pending := [name for name in state.pending if completions.get(name)]:
            name = pending[0]
            ok, value = completions[name].pop(0)
            token = state.pending[name]
            command = CompleteStep(
                state.id, name, token, ok, *((value, None) if ok else (None, value))
            )
            now += 1
        elif timers:
            timers.sort(key=lambda t: t.fire_at)
            timer = timers.pop(0)
            now = max(now + 1, timer.fire_at)
            command = TimerDue(state.id, timer.timer_id)
        else:
            break
        new_state, events, effects = decide(state, command, now, registry)
        assert new_state is not None
        state = new_state
        log += events
    assert fold(log) == state
    return state, log, now
