"""The state machine: examples of each feature, and properties over random workflows and
random interleavings of inputs."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cerebelum.core import rules as r
from cerebelum.core.apply import fold
from cerebelum.core.commands import (
    CancelExecution,
    ChildEnded,
    CompleteStep,
    Recover,
    SendSignal,
    StartExecution,
    StepOutcome,
    TimerDue,
)
from cerebelum.core.events import TERMINAL_EVENTS
from cerebelum.core.machine import (
    MAX_HISTORY,
    MAX_KEPT_SIGNAL_BYTES,
    MAX_KEPT_SIGNALS,
    ArmTimer,
    RunStep,
    SendCommand,
    decide,
)
from cerebelum.core.state import (
    BLOCKED,
    CANCELLED,
    COMPLETED,
    FAILED,
    SLEEPING,
    WAITING,
    Execution,
)
from cerebelum.core.workflow import (
    Registry,
    Step,
    Workflow,
    approval,
    child,
    children,
    sleep,
    wait_for_signal,
)
from cerebelum.errors import (
    InvalidCommand,
    LimitExceeded,
    UnknownWorkflow,
    WorkflowDefinitionError,
)
from tests.sim import simulate


def mk(name: str, retry: r.RetryPolicy | None = None, fn: Any = None) -> Step:
    return Step(fn or (lambda inputs: None), name=name, retry=retry)


def ok(eff: RunStep, value: Any = None, worker: str | None = None) -> StepOutcome:
    return StepOutcome(eff.execution_id, eff.step.name, eff.token, True, value, worker=worker)


def err(eff: RunStep, type_: str = "IOError", worker: str | None = None) -> StepOutcome:
    error = {"type": type_, "types": [type_, "Exception"], "message": "boom"}
    return StepOutcome(
        eff.execution_id, eff.step.name, eff.token, False, error=error, worker=worker
    )


def start(wf: Workflow, inputs: Any = None) -> tuple[Any, list, list, Registry]:
    reg = Registry([wf])
    state, events, effects = decide(None, StartExecution("e", wf.name, inputs or {}), 0, reg)
    return state, events, effects, reg


def test_steps_receive_inputs_and_earlier_results_by_name() -> None:
    a = Step(lambda inputs: inputs["x"] + 1, name="a")
    b = Step(lambda a, inputs: a * inputs["x"], name="b")
    state, log = simulate(Registry([Workflow("wf", a >> b)]), "wf", {"x": 3})
    assert state.status == COMPLETED and state.output == 12
    assert [e["type"] for e in log] == [
        "ExecutionStarted",
        "StepScheduled",
        "StepCompleted",
        "StepScheduled",
        "StepCompleted",
        "ExecutionCompleted",
    ]


def test_parallel_fans_out_and_in() -> None:
    a, b, c = mk("a"), mk("b"), Step(lambda a, b: [a, b], name="c")
    state, events, effects, reg = start(Workflow("wf", a >> [b, mk("x")] >> c))
    state, _, fan = decide(state, ok(effects[0], 1), 1, reg)
    assert sorted(e.step.name for e in fan) == ["b", "x"]
    state, events, more = decide(state, ok(fan[1], "X"), 2, reg)
    assert more == []  # c waits for both branches
    state, events, more = decide(state, ok(fan[0], "B"), 3, reg)
    assert [e.step.name for e in more] == ["c"] and more[0].kwargs == {"a": 1, "b": "B"}


def test_retry_waits_on_a_durable_timer_with_backoff() -> None:
    policy = r.RetryPolicy(max_attempts=3, initial_interval=2, backoff=3, jitter=0)
    state, _, effects, reg = start(Workflow("wf", [mk("a", policy)]))
    state, events, timers = decide(state, err(effects[0]), 10, reg)
    assert [e["type"] for e in events] == ["StepFailed", "StepRetryScheduled"]
    assert isinstance(timers[0], ArmTimer) and timers[0].fire_at == 10 + 2000
    state, events, again = decide(state, TimerDue("e", timers[0].timer_id), 2010, reg)
    assert again[0].attempt == 2
    state, events, timers = decide(state, err(again[0]), 2020, reg)
    assert timers[0].fire_at == 2020 + 6000  # 2 s * 3
    state, _, again = decide(state, TimerDue("e", timers[0].timer_id), 8020, reg)
    state, events, _ = decide(state, err(again[0]), 8030, reg)
    assert state.status == FAILED and events[-1]["type"] == "ExecutionFailed"


def test_non_retryable_errors_and_step_error_fail_at_once() -> None:
    policy = r.RetryPolicy(max_attempts=5, non_retryable=[ValueError])
    for type_ in ("ValueError", "StepError"):
        state, _, effects, reg = start(Workflow("wf", [mk("a", policy)]))
        state, _, _ = decide(state, err(effects[0], type_), 1, reg)
        assert state.status == FAILED and state.error["type"] == type_


def test_diverge_actions() -> None:
    a, b, c = mk("a"), mk("b"), mk("c")
    wf = Workflow(
        "wf",
        a >> b >> c,
        rules=[
            r.diverge(b, on="Skip", then=r.skip_to(c)),
            r.diverge(b, on="Again", then=r.back_to(a)),
            r.diverge(b, on="Ignore", then=r.continue_()),
            r.diverge(b, on="Stop", then=r.fail("stopped")),
            r.diverge(b, on="Flaky", then=r.retry()),
        ],
        max_iterations=1,
    )
    reg = Registry([wf])

    def at_b() -> tuple[Any, RunStep]:
        state, _, effects = decide(None, StartExecution("e", "wf", {}), 0, reg)
        state, _, effects = decide(state, ok(effects[0]), 1, reg)
        return state, effects[0]

    state, eff = at_b()
    state, events, effects = decide(state, err(eff, "Skip"), 2, reg)
    assert [e["type"] for e in events][-3:] == ["DivergeTaken", "JumpTaken", "StepScheduled"]
    assert effects[0].step.name == "c"
    state, eff = at_b()
    state, events, effects = decide(state, err(eff, "Again"), 2, reg)
    assert effects[0].step.name == "a" and state.iteration == 1
    state, _, effects = decide(state, ok(effects[0]), 3, reg)
    state, events, _ = decide(state, err(effects[0], "Again"), 4, reg)
    assert state.status == FAILED and state.error["type"] == "IterationLimitExceeded"
    state, eff = at_b()
    state, _, effects = decide(state, err(eff, "Ignore"), 2, reg)
    assert effects[0].step.name == "c"
    state, eff = at_b()
    state, _, _ = decide(state, err(eff, "Stop"), 2, reg)
    assert state.status == FAILED and state.error["message"] == "stopped"
    state, eff = at_b()
    state, _, timers = decide(state, err(eff, "Flaky"), 2, reg)
    assert isinstance(timers[0], ArmTimer)  # retry() uses the default policy


def test_branch_on_result() -> None:
    a, b, c = mk("a"), mk("b"), mk("c")
    wf = Workflow("wf", a >> b >> c, rules=[r.branch(a, when=lambda v: v > 5, then=r.skip_to(c))])
    state, _, effects, reg = start(wf)
    state, events, effects = decide(state, ok(effects[0], 9), 1, reg)
    assert "BranchTaken" in [e["type"] for e in events] and effects[0].step.name == "c"
    state, _, effects, reg = start(wf)
    state, _, effects = decide(state, ok(effects[0], 1), 1, reg)
    assert effects[0].step.name == "b"


def test_a_broken_predicate_fails_the_execution_clearly() -> None:
    a = mk("a")
    wf = Workflow(
        "wf", [a, mk("b")], rules=[r.branch(a, when=lambda v: v["x"], then=r.skip_to("b"))]
    )
    state, _, effects, reg = start(wf)
    state, _, _ = decide(state, ok(effects[0], None), 1, reg)
    assert state.status == FAILED and state.error["type"] == "RuleError"


def test_durable_sleep_is_a_timer() -> None:
    state, _, effects, reg = start(Workflow("wf", mk("a") >> sleep(60) >> mk("b")))
    state, events, timers = decide(state, ok(effects[0]), 1000, reg)
    assert state.status == SLEEPING and timers[0].fire_at == 61_000
    assert decide(state, TimerDue("e", "nope"), 2000, reg)[1] == []  # unknown timers: ignored
    state, _, effects = decide(state, TimerDue("e", timers[0].timer_id), 61_000, reg)
    assert effects[0].step.name == "b"


def test_signals_wait_buffer_and_time_out() -> None:
    wf = Workflow("wf", mk("a") >> wait_for_signal("go", timeout=5) >> mk("b"))
    state, _, effects, reg = start(wf)
    # A signal that arrives early is kept and consumed when the wait is reached.
    state, events, _ = decide(state, SendSignal("e", "go", {"n": 1}), 1, reg)
    assert events[0]["type"] == "SignalReceived" and state.signals == {"go": [{"n": 1}]}
    state, events, effects = decide(state, ok(effects[0]), 2, reg)
    assert effects[0].step.name == "b" and state.results["go"] == {"n": 1} and state.signals == {}
    # Waiting, then timing out fails by default.
    state, _, effects, reg = start(wf)
    state, _, timers = decide(state, ok(effects[0]), 2, reg)
    assert state.status == WAITING and state.waiting == "go"
    state, _, _ = decide(state, TimerDue("e", timers[0].timer_id), 5002, reg)
    assert state.status == FAILED and state.error["type"] == "SignalTimeout"


def test_a_signal_the_workflow_never_waits_for_is_refused() -> None:
    wf = Workflow("wf", mk("a") >> wait_for_signal("go") >> approval("ok") >> mk("b"))
    assert wf.signals == {"go", "ok"}
    state, _, _, reg = start(wf)
    before = state.to_record()
    with pytest.raises(InvalidCommand, match="never waits for signal 'stop'") as caught:
        decide(state, SendSignal("e", "stop", 1), 1, reg)
    assert "it waits for: 'go', 'ok'" in str(caught.value)
    assert caught.value.execution_id == "e" and state.to_record() == before
    no_waits = Workflow("plain", [mk("a")])
    state, _, _, reg = start(no_waits)
    with pytest.raises(InvalidCommand, match=r"\(it waits for: none\)"):
        decide(state, SendSignal("e", "go", 1), 1, reg)


def test_kept_signals_are_bounded_in_number_and_size() -> None:
    wf = Workflow("wf", mk("a") >> wait_for_signal("go") >> wait_for_signal("more") >> mk("b"))
    state, _, effects, reg = start(wf)
    for n in range(MAX_KEPT_SIGNALS):  # early: kept until the waits take them
        state, events, _ = decide(state, SendSignal("e", "go" if n % 2 else "more", n), 1, reg)
        assert [e["type"] for e in events] == ["SignalReceived"]
    before = state.to_record()
    with pytest.raises(InvalidCommand, match=f"already keeps {MAX_KEPT_SIGNALS} signals"):
        decide(state, SendSignal("e", "go", "one too many"), 2, reg)
    assert state.to_record() == before

    state, _, effects, reg = start(wf)
    big = "x" * MAX_KEPT_SIGNAL_BYTES
    with pytest.raises(LimitExceeded, match="which no wait takes yet, is 16386 bytes"):
        decide(state, SendSignal("e", "go", big), 1, reg)
    # The same payload is taken at once by a wait for it: never kept, so not refused.
    state, _, _ = decide(state, ok(effects[0]), 2, reg)
    assert state.waiting == "go"
    state, events, _ = decide(state, SendSignal("e", "go", big), 3, reg)
    assert state.results["go"] == big and state.signals == {}


def test_approval_timeout_can_continue() -> None:
    wf = Workflow("wf", approval("ok", timeout=1, on_timeout=r.continue_()) >> mk("b"))
    state, events, timers, reg = start(wf)
    assert events[1]["type"] == "ApprovalRequested"
    state, _, effects = decide(state, TimerDue("e", timers[0].timer_id), 1000, reg)
    assert effects[0].step.name == "b" and state.results["ok"] is None


def test_cancel_records_why_and_drops_timers() -> None:
    state, _, effects, reg = start(Workflow("wf", sleep(60) >> mk("b")))
    timer = effects[0]
    state, events, _ = decide(state, CancelExecution("e", "customer asked"), 1, reg)
    assert state.status == CANCELLED and events[0]["reason"] == "customer asked"
    assert state.timers == {} and decide(state, TimerDue("e", timer.timer_id), 2, reg)[1] == []


def test_signal_or_cancel_for_a_missing_execution_is_refused() -> None:
    reg = Registry([Workflow("wf", [mk("a")])])
    for command in (SendSignal("x", "s", 1), CancelExecution("x", "r")):
        with pytest.raises(InvalidCommand, match="no execution"):
            decide(None, command, 0, reg)


def test_start_is_idempotent_and_unknown_workflows_are_refused() -> None:
    state, _, _, reg = start(Workflow("wf", [mk("a")]))
    again, events, effects = decide(state, StartExecution("e", "wf", {"other": 1}), 2, reg)
    assert again is state and events == [] and effects == []
    with pytest.raises(UnknownWorkflow):
        decide(None, StartExecution("e2", "nope", {}), 1, reg)


def test_a_changed_definition_blocks_the_execution_instead_of_guessing() -> None:
    state, _, _, _ = start(Workflow("wf", [mk("a")]))
    changed = Registry([Workflow("wf", [mk("a"), mk("b")], version="2")])
    state, events, effects = decide(state, Recover("e"), 1, changed)
    assert state.status == BLOCKED and state.blocked["versions_here"] == ["2"]
    assert [e["type"] for e in events] == ["ExecutionBlocked"] and effects == []


def test_history_limit() -> None:
    a = mk("a")
    wf = Workflow(
        "wf", [a], rules=[r.branch(a, when=lambda v: True, then=r.back_to(a))], max_iterations=10**9
    )
    state, _, effects, reg = start(wf)
    n = 0
    while not state.terminal:
        state, _, effects = decide(state, ok(effects[0]), n, reg)
        n += 1
    # The limit is checked after each decision, which records a handful of events at most.
    assert state.error["type"] == "HistoryLimitExceeded" and state.version <= MAX_HISTORY + 5


def test_an_outcome_records_the_worker_that_ran_it_and_none_keeps_the_old_shape() -> None:
    policy = r.RetryPolicy(initial_interval=1)
    state, _, effects, reg = start(Workflow("wf", [mk("a", policy), mk("b")]))
    state, failed, effects = decide(state, err(effects[0], worker="cerebelum-worker:w1"), 1, reg)
    assert failed[0]["type"] == "StepFailed" and failed[0]["worker"] == "cerebelum-worker:w1"
    state, _, effects = decide(state, TimerDue("e", effects[0].timer_id), 2, reg)
    state, done, effects = decide(state, ok(effects[0], 1, worker="cerebelum-worker:w2"), 3, reg)
    assert done[0]["type"] == "StepCompleted" and done[0]["worker"] == "cerebelum-worker:w2"
    state, done, _ = decide(state, ok(effects[0], 2), 4, reg)  # no worker named: no field
    assert done[0]["type"] == "StepCompleted" and "worker" not in done[0]
    assert state.status == "completed"


def test_stale_and_duplicate_outcomes_change_nothing() -> None:
    state, _, effects, reg = start(Workflow("wf", [mk("a"), mk("b")]))
    first = effects[0]
    state, _, _ = decide(state, ok(first, 1), 2, reg)
    assert decide(state, ok(first, 99), 3, reg)[1] == []


def test_recover_reissues_running_steps_and_timers() -> None:
    b = Step(lambda a: a, name="b")
    policy = r.RetryPolicy(initial_interval=5)
    state, log, effects, reg = start(Workflow("wf", mk("a") >> [b, mk("c", policy)]))
    state, events, effects = decide(state, ok(effects[0], 5), 2, reg)
    log += events
    state, events, timers = decide(state, err(effects[1]), 3, reg)  # c waits to retry
    restored = fold(log + events)  # what a new owner rebuilds
    recovered = decide(restored, Recover("e"), 4, reg)
    # the re-run is recorded as a new attempt before it runs; the retry timer is re-armed
    (again,) = recovered[1]
    assert again["type"] == "StepRescheduled" and again["step"] == "b"
    assert again["attempt"] == 2 and again["redispatch"] == 1
    assert again["reason"] == "owner changed"
    run, timer = recovered[2]
    assert run.step.name == "b" and run.kwargs == {"a": 5} and run.attempt == 2
    assert run.token == again["version"] and not run.isolated
    assert timer.timer_id == timers[0].timer_id and timer.fire_at == timers[0].fire_at
    # the first run's report is stale now: only the re-run's counts
    state = recovered[0]
    assert decide(state, ok(effects[0], 1), 5, reg)[1] == []


def test_a_step_in_flight_at_two_owner_changes_runs_isolated_and_its_crash_fails_it() -> None:
    state, log, effects, reg = start(Workflow("wf", [mk("a"), mk("b")]))
    for redispatch in (1, 2):
        state, events, effects = decide(state, Recover("e"), redispatch, reg)
        log += events
        assert effects[0].isolated == (redispatch == 2)
    crashed = {"type": "StepCrashed", "types": ["StepCrashed"], "message": "died (signal 9)"}
    state, events, _ = decide(state, StepOutcome("e", "a", effects[0].token, False, None, crashed),
                              3, reg)  # fmt: skip
    log += events
    assert state.status == FAILED and state.error["type"] == "StepCrashed"
    assert [e["attempt"] for e in log if e["type"] == "StepFailed"] == [3]
    assert fold(log) == state


def test_isolation_outlives_a_retry_and_ends_with_the_step() -> None:
    policy = r.RetryPolicy(max_attempts=5, initial_interval=1)
    state, _, effects, reg = start(Workflow("wf", [mk("a", policy), mk("b")]))
    for n in (1, 2):
        state, _, effects = decide(state, Recover("e"), n, reg)
    state, _, timers = decide(state, err(effects[0]), 3, reg)
    state, _, effects = decide(state, TimerDue("e", timers[0].timer_id), 10, reg)
    assert effects[0].isolated and effects[0].attempt == 4
    state, _, effects = decide(state, ok(effects[0]), 11, reg)
    assert effects[0].step.name == "b" and not effects[0].isolated


def test_workflow_definitions_are_checked_at_build_time() -> None:
    with pytest.raises(WorkflowDefinitionError, match="neither"):
        Workflow("bad", [Step(lambda missing: None, name="a")])
    with pytest.raises(WorkflowDefinitionError, match="twice"):
        a = mk("a")
        Workflow("bad", [a, a])
    with pytest.raises(WorkflowDefinitionError, match="no node"):
        Workflow("bad", [mk("a")], rules=[r.branch("a", when=bool, then=r.skip_to("zz"))])


def test_version_is_a_hash_of_the_shape_unless_declared() -> None:
    def two() -> Workflow:
        return Workflow("w", [mk("a"), mk("b")])

    assert two().version == two().version
    assert two().version != Workflow("w", [mk("a"), mk("c")]).version
    assert Workflow("w", [mk("a")], version="7").version == "7"


# --- properties -------------------------------------------------------------------------------

NAMES = [f"s{i}" for i in range(16)]  # 5 nodes of up to 3 steps each


@st.composite
def workflows(draw: st.DrawFn) -> Workflow:
    """Random timelines of steps, parallel groups, sleeps and signal waits, with random rules."""
    nodes: list[Any] = []
    names = iter(NAMES)
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["step", "step", "parallel", "sleep", "wait", "child"]))
        policy = draw(st.sampled_from([None, r.RetryPolicy(max_attempts=2, initial_interval=1)]))
        if kind == "step":
            nodes.append(mk(next(names), policy))
        elif kind == "parallel":
            nodes.append([mk(next(names), policy) for _ in range(draw(st.integers(2, 3)))])
        elif kind == "sleep":
            nodes.append(sleep(draw(st.integers(0, 5)), name=next(names)))
        elif kind == "child":  # one child execution, or a fan-out of 0-3
            if draw(st.booleans()):
                nodes.append(child("sub", {}, name=next(names)))
            else:
                nodes.append(children("sub", each=[{}] * draw(st.integers(0, 3)), name=next(names)))
        else:
            on_timeout = draw(st.sampled_from([r.fail(), r.continue_()]))
            timeout = draw(st.sampled_from([None, 3]))
            nodes.append(
                wait_for_signal(
                    draw(st.sampled_from(["x", "y"])),
                    timeout=timeout,
                    on_timeout=on_timeout,
                    name=next(names),
                )
            )
    flat = [n for node in nodes for n in (node if isinstance(node, list) else [node])]
    step_names = [n.name for n in flat if isinstance(n, Step)]
    all_names = [n.name for n in flat]
    rules = []
    for _ in range(draw(st.integers(0, 3))):
        if not step_names:
            break
        at = draw(st.sampled_from(step_names))
        target = draw(st.sampled_from(all_names))
        action = draw(
            st.sampled_from(
                [r.retry(), r.continue_(), r.fail(), r.back_to(target), r.skip_to(target)]
            )
        )
        if draw(st.booleans()):
            rules.append(r.diverge(at, on="Boom", then=action))
        elif action.kind in (r.BACK_TO, r.SKIP_TO, r.FAIL):
            rules.append(r.branch(at, when=lambda v: v == 1, then=action))
        else:
            rules.append(r.diverge(at, when=lambda v: v == 2, then=action))
    return Workflow("wf", nodes, rules=rules, max_iterations=3)


def signal_refusal(wf: Workflow, state: Execution, command: Any) -> str | None:
    """What decide says when it refuses `command`, a signal; None if it takes it."""
    if not isinstance(command, SendSignal):
        return None
    if command.signal not in wf.signals:
        return "never waits for signal"
    kept = sum(len(queued) for queued in state.signals.values())
    if state.waiting != command.signal and kept >= MAX_KEPT_SIGNALS:
        return "already keeps"
    return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflows(), st.data())
def test_folding_the_events_gives_the_live_state(wf: Workflow, data: st.DataObject) -> None:
    """For random workflows and random interleavings of outcomes, timers, signals, cancels,
    duplicates, restarts and deploys (to a worker without the execution's version, which
    blocks it, and back, which resumes it; or to one that migrates it to a copy of its
    workflow): fold(log) == live state after every decision; versions are gapless; nothing
    follows the terminal event; each dispatch is answered at most once."""
    reg = Registry([wf])
    # Deploys (decisions.md §6): a worker that lacks the execution's version, and one whose
    # only definition migrates it (an identity mapping onto the same timeline).
    other = Registry([Workflow("wf", [mk("zz")], version="other")])
    moved = Workflow("wf", list(wf.nodes), rules=wf.rules, max_iterations=3, version="m",
                     migrate_from={wf.version: {name: name for name in wf.index}})  # fmt: skip
    registries = {"reg": reg, "other": other, "moved": Registry([moved])}
    current = reg
    now = 0
    state, log, effects = decide(None, StartExecution("e", "wf", {}), now, reg)
    pending: list[Any] = list(effects)
    delivered: list[Any] = []
    for _ in range(data.draw(st.integers(5, 60), label="steps")):
        choice = data.draw(
            st.sampled_from(
                [
                    "effect",
                    "effect",
                    "effect",
                    "signal",
                    "dup",
                    "restart",
                    "cancel",
                    "deploy",
                    "complete",
                ]
            )
        )
        now += 1
        if choice == "deploy":
            current = registries[data.draw(st.sampled_from(sorted(registries)), label="deploy")]
            state = fold(log)
            pending = []
            command: Any = Recover("e")
        elif choice == "restart":
            state = fold(log)
            pending = []
            command = Recover("e")
        elif choice == "signal":
            command = SendSignal("e", data.draw(st.sampled_from(["x", "y"])), now)
        elif choice == "dup" and delivered:
            command = data.draw(st.sampled_from(delivered))
        elif choice == "cancel" and data.draw(st.integers(0, 9)) == 0:
            command = CancelExecution("e", "test")
        elif choice == "child":  # a child execution ends (or a stray end arrives)
            live = [
                (n, k, cid)
                for n, c in state.children.items()
                for k, (cid, done) in enumerate(zip(c["ids"], c["done"], strict=True))
                if not done
            ]
            name, k, cid = data.draw(st.sampled_from(live)) if live else ("zz", 0, "stray")
            if data.draw(st.booleans()):
                command = ChildEnded("e", name, k, cid, "completed", output=now)
            else:
                error = {"type": "Boom", "types": ["Boom"], "message": "m"}
                command = ChildEnded("e", name, k, cid, "failed", error=error)
        elif choice == "complete":  # an outside system completes a pending step (or tries)
            if state.pending and data.draw(st.booleans()):
                name = data.draw(st.sampled_from(sorted(state.pending)))
                token = state.pending[name]
            else:
                name = data.draw(st.sampled_from(NAMES[:4]))
                token = data.draw(st.integers(1, 40))
            if data.draw(st.booleans()):
                command = CompleteStep("e", name, token, True, value=now)
            else:
                command = CompleteStep("e", name, token, False,
                                       error={"type": "Boom", "message": "m"})  # fmt: skip
        elif pending:
            eff = pending.pop(data.draw(st.integers(0, len(pending) - 1)))
            if isinstance(eff, SendCommand):  # a child's start or cancel: another execution's
                continue
            if isinstance(eff, ArmTimer):
                now = max(now, eff.fire_at)
                command = TimerDue("e", eff.timer_id)
            else:
                outcome = data.draw(st.sampled_from(["ok1", "ok2", "ok0", "boom", "other", "pend"]))
                worker = data.draw(st.sampled_from([None, "cerebelum-worker:a", "w:b"]))
                if outcome == "pend":  # ctx.pending(): completed from outside, or times out
                    timeout = data.draw(st.sampled_from([0.0, 0.003]))
                    command = StepOutcome(
                        eff.execution_id, eff.step.name, eff.token, True, worker=worker,
                        pending=timeout,
                    )  # fmt: skip
                elif outcome.startswith("ok"):
                    command = ok(eff, int(outcome[2]), worker)
                else:
                    command = err(eff, "Boom" if outcome == "boom" else "Other", worker)
        else:
            continue
        delivered.append(command)
        if state.terminal and isinstance(command, ChildEnded):
            assert decide(state, command, now, reg)[1] == []  # a child's end changes nothing
            continue
        if state.terminal and isinstance(command, (SendSignal, CancelExecution, CompleteStep)):
            with pytest.raises(InvalidCommand, match="which has ended"):
                decide(state, command, now, reg)  # dead-lettered: the caller is told
            continue
        if current is reg and state.workflow_version == wf.version and not state.blocked:
            refusal = signal_refusal(wf, state, command)
            if refusal is not None:
                with pytest.raises(InvalidCommand, match=refusal):
                    decide(state, command, now, reg)  # dead-lettered, the state untouched
                continue
        before = state.to_record() if state is not None else None
        try:
            new_state, events, effects = decide(state, command, now, current)
        except InvalidCommand as exc:  # held or migrated: a signal refused all the same
            if isinstance(command, ChildEnded):  # refused only while held (blocked)
                assert "blocked" in str(exc)
                assert state.to_record() == before
                continue
            if isinstance(command, CompleteStep):  # another run's, done already, or held
                assert state.pending.get(command.step) != command.token or "blocked" in str(exc)
                assert state.to_record() == before
                continue
            assert isinstance(command, SendSignal) and current is not reg, exc
            assert "never waits for signal" in str(exc) or "already keeps" in str(exc)
            assert state.to_record() == before
            continue
        if isinstance(command, CompleteStep):  # accepted only for the run that awaits it
            assert (
                before is not None and before.get("pending", {}).get(command.step) == command.token
            )
        # decide works on a copy: the state it was given is untouched whatever it decided
        assert (state.to_record() if state is not None else None) == before
        if isinstance(command, StepOutcome):  # its outcome event names who ran it, if told
            for e in events:
                if e["type"] in ("StepCompleted", "StepFailed") and e["step"] == command.step:
                    assert e.get("worker") == command.worker
        assert events == [] or new_state is not state
        state = new_state
        log += events
        pending += effects
        assert fold(log) == state
    versions = [e["version"] for e in log]
    assert versions == list(range(1, len(log) + 1))
    terminal = [i for i, e in enumerate(log) if e["type"] in TERMINAL_EVENTS]
    assert terminal == [] or terminal == [len(log) - 1]
    answered: set[int] = set()
    started_children: dict[str, int] = {}  # a child node's ChildrenStarted version
    for e in log:
        if e["type"] == "ChildrenStarted":
            started_children[e["step"]] = e["version"]
            continue
        if e["type"] in ("StepCompleted", "StepFailed") and e["step"] in started_children:
            # a child node ends once per start of its children
            assert started_children.pop(e["step"]) not in answered
            continue
        if e["type"] in ("StepCompleted", "StepFailed") and "signal" not in e:
            token = max(
                s["version"]
                for s in log[: e["version"]]
                if s["type"] in ("StepScheduled", "StepRescheduled") and s["step"] == e["step"]
            )
            assert token not in answered  # a result is recorded once per dispatch
            answered.add(token)


def test_old_versions_registered_beside_new_ones_finish_on_their_definition() -> None:
    old = Workflow("wf", [mk("a")], version="1")
    new = Workflow("wf", [mk("a"), mk("b")], version="2")
    state, _, effects, _ = start(old)
    both = Registry([old, new])
    state, events, _ = decide(state, ok(effects[0]), 1, both)
    assert state.status == COMPLETED and state.workflow_version == "1"
    fresh, _, _ = decide(None, StartExecution("e2", "wf", {}), 1, both)
    assert fresh is not None and fresh.workflow_version == "2"
    with pytest.raises(WorkflowDefinitionError, match="share version"):
        Registry([old, Workflow("wf", [mk("z")], version="1")])
