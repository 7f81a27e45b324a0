"""External completion in the pure core: a step returns ctx.pending(), another system
completes it (CompleteStep) exactly once, or its durable timer fails it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cerebelum.core.apply import fold
from cerebelum.core.commands import (
    CancelExecution,
    CompleteStep,
    Recover,
    StartExecution,
    TimerDue,
    complete_command,
    completion_token,
    parse_command,
    parse_completion_token,
)
from cerebelum.core.machine import ArmTimer, RunStep, decide
from cerebelum.core.rules import RetryPolicy
from cerebelum.core.state import Execution
from cerebelum.core.workflow import Registry, StepContext, Workflow, step
from cerebelum.errors import InvalidCommand
from tests.sim import START, run_step, simulate

T0 = START


@step
def prepare(inputs: dict) -> dict:
    return {"doc": inputs["doc"]}


@step
def sign(ctx: StepContext, prepare: dict) -> Any:
    return ctx.pending(timeout=60)


@step(retry=RetryPolicy(max_attempts=2, initial_interval=1, jitter=0))
def sign_retried(ctx: StepContext, prepare: dict) -> Any:
    return ctx.pending(timeout=60)


@step
def archive(sign: dict) -> dict:
    return {"archived": sign["signed_by"]}


WF = Workflow("signing", prepare >> sign >> archive)
RETRIED = Workflow("signing_retried", prepare >> sign_retried)
REG = Registry([WF, RETRIED])


def until_pending(workflow: str = "signing") -> tuple[Execution, list[dict], list[Any]]:
    """Start and run until the signing step is pending."""
    state, log, effects = decide(None, StartExecution("e-1", workflow, {"doc": "d"}), T0, REG)
    now = T0
    while True:
        runs = [e for e in effects if isinstance(e, RunStep)]
        if not runs:
            assert state is not None
            return state, log, effects
        now += 1
        state, events, effects = decide(state, run_step(runs[0]), now, REG)
        log += events


def test_a_pending_step_waits_for_its_completion_and_carries_on_with_the_result() -> None:
    state, log, effects = until_pending()
    pending = log[-1]
    assert pending["type"] == "StepPending" and pending["step"] == "sign"
    token = pending["token"]
    assert state.pending == {"sign": token} and "sign" not in state.running
    assert [type(e) for e in effects] == [ArmTimer]  # its 60 s completion timer
    assert effects[0].fire_at == pending["at"] + 60_000
    state2, events, effects = decide(
        state, CompleteStep("e-1", "sign", token, True, {"signed_by": "ana"}), T0 + 50, REG
    )
    assert [e["type"] for e in events] == ["StepCompleted", "StepScheduled"]
    assert state2 is not None and state2.pending == {} and not state2.timers
    assert fold(log + events) == state2


def test_a_step_is_completed_once() -> None:
    state, _, _ = until_pending()
    token = state.pending["sign"]
    done, _, _ = decide(
        state, CompleteStep("e-1", "sign", token, True, {"signed_by": "a"}), T0, REG
    )
    with pytest.raises(InvalidCommand, match="awaits no completion"):
        decide(done, CompleteStep("e-1", "sign", token, True, {"signed_by": "b"}), T0, REG)


def test_a_completion_with_another_runs_token_is_refused() -> None:
    state, _, _ = until_pending()
    with pytest.raises(InvalidCommand, match="not 1"):
        decide(state, CompleteStep("e-1", "sign", 1, True, {}), T0, REG)
    with pytest.raises(InvalidCommand, match="awaits no completion"):
        decide(state, CompleteStep("e-1", "prepare", 2, True, {}), T0, REG)
    with pytest.raises(InvalidCommand, match="no execution"):
        decide(None, CompleteStep("nobody", "sign", 3, True, {}), T0, REG)


def test_a_failed_completion_is_retried_under_the_policy_with_a_new_token() -> None:
    state, log, _ = until_pending("signing_retried")
    old = state.pending["sign_retried"]
    error = {"type": "Declined", "message": "the signer said no"}
    state, events, effects = decide(
        state, CompleteStep("e-1", "sign_retried", old, False, error=error), T0 + 5, REG
    )
    assert [e["type"] for e in events] == ["StepFailed", "StepRetryScheduled"]
    assert events[0]["error"] == error
    (timer,) = effects
    state, more, effects = decide(state, TimerDue("e-1", timer.timer_id), timer.fire_at, REG)
    (run,) = [e for e in effects if isinstance(e, RunStep)]
    state, evs, _ = decide(state, run_step(run), timer.fire_at + 1, REG)
    assert state is not None and state.pending["sign_retried"] != old  # a new run, a new token
    with pytest.raises(InvalidCommand, match="an earlier attempt's token"):
        decide(state, CompleteStep("e-1", "sign_retried", old, True, {}), T0, REG)
    assert fold(log + events + more + evs) == state


def test_not_completed_in_time_fails_with_step_timeout() -> None:
    state, _, effects = until_pending()
    (timer,) = effects
    state, events, _ = decide(state, TimerDue("e-1", timer.timer_id), timer.fire_at, REG)
    assert [e["type"] for e in events] == ["TimerFired", "StepFailed", "ExecutionFailed"]
    assert events[1]["error"]["type"] == "StepTimeout"
    assert state is not None and state.status == "failed" and state.pending == {}


def test_a_new_owner_rearms_the_timer_and_runs_nothing_again() -> None:
    state, _, _ = until_pending()
    _, events, effects = decide(state, Recover("e-1"), T0 + 9, REG)
    assert events == [] and [type(e) for e in effects] == [ArmTimer]


def test_cancel_drops_a_pending_step() -> None:
    state, _, _ = until_pending()
    token = state.pending["sign"]
    state, events, _ = decide(state, CancelExecution("e-1", "no need"), T0 + 3, REG)
    assert state is not None and state.status == "cancelled" and state.pending == {}
    with pytest.raises(InvalidCommand, match="has ended"):
        decide(state, CompleteStep("e-1", "sign", token, True, {}), T0, REG)


def test_the_snapshot_keeps_pending_steps_only_when_there_are_some() -> None:
    state, _, _ = until_pending()
    assert state.to_record()["pending"] == state.pending
    assert Execution.from_record(orjson.loads(orjson.dumps(state.to_record()))) == state
    assert "pending" not in Execution("x").to_record()


def test_simulated_to_the_end() -> None:
    state, log = simulate(
        REG, "signing", {"doc": "d"}, completions={"sign": [(True, {"signed_by": "ana"})]}
    )
    assert state.status == "completed" and state.output == {"archived": "ana"}
    assert "StepPending" in [e["type"] for e in log]


def test_the_wire_format_and_the_token() -> None:
    raw = complete_command("e-1", "sign", 7, result={"ok": 1})
    command = parse_command(raw)
    assert isinstance(command, CompleteStep) and command.ok and command.value == {"ok": 1}
    failed = parse_command(complete_command("e-1", "sign", 7, error={"type": "No", "message": "m"}))
    assert isinstance(failed, CompleteStep) and failed.error == {"type": "No", "message": "m"}
    for body, problem in [
        ({"step": "sign", "token": 7}, "either 'result' or 'error'"),
        ({"step": "sign", "token": 7, "result": 1, "error": {"type": "x"}}, "either"),
        ({"step": "sign", "token": "7", "result": 1}, "positive integer"),
        ({"token": 7, "result": 1}, "step name"),
        ({"step": "sign", "token": 7, "error": "boom"}, "'error' must be"),
    ]:
        body = {"type": "CompleteStep", "execution_id": "e-1", **body}
        with pytest.raises(InvalidCommand, match=problem):
            parse_command(orjson.dumps(body))
    assert completion_token("e-1", "sign", 7) == "e-1/sign/7"
    assert parse_completion_token("e-1/sign/7") == ("e-1", "sign", 7)
    for bad in ("e-1/sign", "e-1/sign/x", "/sign/7", "e 1/sign/7"):
        with pytest.raises(ValueError):
            parse_completion_token(bad)
