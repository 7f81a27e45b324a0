"""The state machine: examples, and properties over random workflows and interleavings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cerebelum.core.commands import StartExecution, StepOutcome
from cerebelum.core.machine import decide, fold, resume
from cerebelum.core.state import COMPLETED, FAILED
from cerebelum.core.workflow import Registry, Step, Workflow
from cerebelum.errors import UnknownWorkflow, WorkflowDefinitionError


def make_workflow(n: int, name: str = "wf") -> Workflow:
    steps = []
    for i in range(n):
        prev = [f"s{i - 1}"] if i else ["inputs"]
        fn = eval(f"lambda {', '.join(prev)}: None")  # a step taking the previous step's result
        steps.append(Step(fn, name=f"s{i}"))
    return Workflow(name, steps)


def test_a_run_to_completion_passes_results_by_name() -> None:
    reg = Registry([make_workflow(3)])
    state, events, effects = decide(None, StartExecution("e", "wf", {"x": 1}), 10, reg)
    assert [e["type"] for e in events] == ["ExecutionStarted", "StepScheduled"]
    assert effects[0].kwargs == {"inputs": {"x": 1}}
    for i in range(3):
        (effect,) = effects
        state, events, effects = decide(state, StepOutcome("e", f"s{i}", 1, True, i * 10), 11, reg)
        if i < 2:
            assert effects[0].kwargs == {f"s{i}": i * 10}
    assert state is not None and state.status == COMPLETED and state.output == 20
    assert [e["type"] for e in events] == ["StepCompleted", "ExecutionCompleted"]


def test_a_failing_step_fails_the_execution_with_its_error() -> None:
    reg = Registry([make_workflow(2)])
    state, _, _ = decide(None, StartExecution("e", "wf", {}), 1, reg)
    error = {"type": "ValueError", "message": "bad"}
    state, events, effects = decide(state, StepOutcome("e", "s0", 1, False, error=error), 2, reg)
    assert state is not None and state.status == FAILED
    assert state.error == {"type": "ValueError", "message": "bad", "step": "s0"}
    assert effects == [] and [e["type"] for e in events] == ["StepFailed", "ExecutionFailed"]


def test_start_is_idempotent_and_unknown_workflows_are_refused() -> None:
    reg = Registry([make_workflow(1)])
    state, _, _ = decide(None, StartExecution("e", "wf", {}), 1, reg)
    again, events, effects = decide(state, StartExecution("e", "wf", {"other": 1}), 2, reg)
    assert again is state and events == [] and effects == []
    with pytest.raises(UnknownWorkflow):
        decide(None, StartExecution("e2", "nope", {}), 1, reg)


def test_stale_and_duplicate_outcomes_change_nothing() -> None:
    reg = Registry([make_workflow(2)])
    state, _, _ = decide(None, StartExecution("e", "wf", {}), 1, reg)
    state, _, _ = decide(state, StepOutcome("e", "s0", 1, True, 1), 2, reg)
    for stale in (StepOutcome("e", "s0", 1, True, 99), StepOutcome("e", "s1", 7, True, 1)):
        assert decide(state, stale, 3, reg)[1] == []


def test_resume_reissues_the_scheduled_step() -> None:
    reg = Registry([make_workflow(2)])
    state, _, _ = decide(None, StartExecution("e", "wf", {}), 1, reg)
    state, _, _ = decide(state, StepOutcome("e", "s0", 1, True, 5), 2, reg)
    assert state is not None
    (effect,) = resume(state, reg)
    assert effect.step.name == "s1" and effect.kwargs == {"s0": 5}


def test_workflow_definitions_are_checked_at_build_time() -> None:
    with pytest.raises(WorkflowDefinitionError, match="neither"):
        Workflow("bad", [Step(lambda missing: None, name="a")])
    with pytest.raises(WorkflowDefinitionError, match="twice"):
        a = Step(lambda: None, name="a")
        Workflow("bad", [a, a])


def test_version_is_a_hash_of_the_shape_unless_declared() -> None:
    assert make_workflow(2).version == make_workflow(2).version
    assert make_workflow(2).version != make_workflow(3).version
    assert Workflow("w", [Step(lambda: None, name="a")], version="7").version == "7"


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, list[tuple[str, int, bool]]]:
    n_steps = draw(st.integers(1, 6))
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["run", "fail", "stale", "restart", "dup-start"]),
                st.integers(0, 10),
                st.booleans(),
            ),
            max_size=30,
        )
    )
    return n_steps, ops


@settings(max_examples=500, deadline=None)
@given(scenarios())
def test_folding_the_events_gives_the_live_state(
    scenario: tuple[int, list[tuple[str, int, bool]]],
) -> None:
    n_steps, ops = scenario
    reg = Registry([make_workflow(n_steps)])
    log: list[dict] = []
    state, events, pending = decide(None, StartExecution("e", "wf", {"k": 1}), 0, reg)
    log += events
    delivered = []
    for now, (op, value, ok) in enumerate(ops, start=1):
        if op == "restart":  # a new owner restores from the log and re-dispatches
            assert state is not None
            restored = fold(log)
            assert restored == state
            state, pending = restored, resume(restored, reg)
            continue
        if op == "dup-start":
            command = StartExecution("e", "wf", {"k": 2})
        elif op == "stale" and delivered:
            command = delivered[value % len(delivered)]
        elif pending:
            effect = pending.pop(0)
            error = None if op == "run" else {"type": "E", "message": "x"}
            command = StepOutcome("e", effect.step.name, effect.attempt, op == "run", value, error)
            delivered.append(command)
        else:
            continue
        state, events, effects = decide(state, command, now, reg)
        log += events
        pending += effects
        assert fold(log) == state
    versions = [e["version"] for e in log]
    assert versions == list(range(1, len(log) + 1))
    terminal = [e for e in log if e["type"] in ("ExecutionCompleted", "ExecutionFailed")]
    assert len(terminal) <= 1
    if terminal:
        assert log[-1] is terminal[0]
    completed = [e["step"] for e in log if e["type"] == "StepCompleted"]
    assert len(completed) == len(set(completed))  # a result is recorded once
