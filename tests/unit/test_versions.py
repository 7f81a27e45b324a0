"""Versions (decisions.md §6): an execution whose version the worker lacks is held (blocked),
resumes by itself where its version is, or moves on purpose to a version that declares a
mapping from it; the restore finds which executions to block or resume."""

from __future__ import annotations

from typing import Any

import pytest

from cerebelum.core.apply import fold
from cerebelum.core.commands import (
    CancelExecution,
    Recover,
    SendSignal,
    StartExecution,
    StepOutcome,
    TimerDue,
)
from cerebelum.core.machine import MAX_KEPT_SIGNALS, ArmTimer, RunStep, decide
from cerebelum.core.state import BLOCKED, CANCELLED, COMPLETED, RUNNING, WAITING
from cerebelum.core.workflow import Registry, Step, Workflow, approval, sleep
from cerebelum.errors import InvalidCommand, WorkflowDefinitionError
from cerebelum.worker.app import versions_to_touch
from cerebelum.worker.restore import BLOCKED as BLOCKED_FLAG
from cerebelum.worker.restore import PARKED, _index, recovery_header, workflow_header


def mk(name: str, fn: Any = None) -> Step:
    return Step(fn or (lambda inputs: name), name=name)


def ok(eff: RunStep, value: Any = None) -> StepOutcome:
    return StepOutcome(eff.execution_id, eff.step.name, eff.token, True, value)


V1 = Workflow("order", mk("check") >> approval("approval") >> mk("ship"), version="v1")
# Another shape: a step before the approval and another after.
V2 = Workflow(
    "order", mk("check") >> mk("score") >> approval("approval") >> mk("pack") >> mk("ship"),
    version="v2",
)  # fmt: skip


class Run:
    """One execution driven by hand; every decision is checked against the fold."""

    def __init__(self, registry: Registry, workflow: str = "order") -> None:
        self.now = 0
        self.state, self.log, self.effects = decide(
            None, StartExecution("e", workflow, {}), 0, registry
        )

    def send(self, command: Any, registry: Registry) -> list[dict[str, Any]]:
        self.now += 1
        self.state, events, self.effects = decide(self.state, command, self.now, registry)
        self.log += events
        assert fold(self.log) == self.state
        return events

    def finish(self, registry: Registry) -> None:
        while self.effects and not self.state.terminal:
            eff = self.effects[0]
            command = ok(eff) if isinstance(eff, RunStep) else TimerDue("e", eff.timer_id)
            self.send(command, registry)


def parked_at_approval() -> Run:
    run = Run(Registry([V1]))
    run.send(ok(run.effects[0]), Registry([V1]))
    assert run.state.status == WAITING
    return run


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def test_a_worker_without_the_version_blocks_the_execution_and_keeps_a_signal() -> None:
    run = parked_at_approval()
    only_v2 = Registry([V2])
    events = run.send(Recover("e"), only_v2)
    assert types(events) == ["ExecutionBlocked"]
    assert events[0]["waiting_for"] == "v1" and events[0]["versions_here"] == ["v2"]
    assert events[0]["status"] == WAITING and "lacks" in events[0]["reason"]
    assert run.state.status == BLOCKED and run.effects == []
    # Touched again for the same reason: nothing more is recorded.
    assert run.send(Recover("e"), only_v2) == []
    # A signal is kept in the state (not taken, not refused), to be applied on resume.
    events = run.send(SendSignal("e", "approval", {"approved": True}), only_v2)
    assert types(events) == ["SignalReceived"] and run.state.status == BLOCKED
    assert run.state.signals == {"approval": [{"approved": True}]}
    # A worker with v1 again: resumed, the kept signal taken, and on to the end.
    both = Registry([V1, V2])
    events = run.send(Recover("e"), both)
    assert types(events) == [
        "ExecutionResumed", "StepCompleted", "StepScheduled",
    ]  # fmt: skip
    assert events[0]["status"] == WAITING and events[1]["result"] == {"approved": True}
    assert run.state.blocked is None and run.state.signals == {}
    run.finish(both)
    assert run.state.status == COMPLETED and run.state.workflow_version == "v1"


def test_any_command_resumes_a_blocked_execution_where_its_version_is() -> None:
    run = parked_at_approval()
    run.send(Recover("e"), Registry([V2]))
    events = run.send(SendSignal("e", "approval", "yes"), Registry([V1]))
    assert types(events)[:3] == ["ExecutionResumed", "SignalReceived", "StepCompleted"]
    run.finish(Registry([V1]))
    assert run.state.status == COMPLETED


def test_a_step_in_flight_runs_again_when_the_execution_resumes() -> None:
    run = Run(Registry([V1]))
    first = run.effects[0]
    run.send(Recover("e"), Registry([V2]))  # its partition moved to a worker without v1
    assert run.state.status == BLOCKED and run.state.running == {"check": 2}
    assert run.send(ok(first), Registry([V2])) == []  # a stale report changes nothing
    events = run.send(Recover("e"), Registry([V1]))
    assert types(events) == ["ExecutionResumed", "StepRescheduled"]
    assert events[1]["reason"] == "resumed" and events[0]["status"] == RUNNING
    (again,) = run.effects
    assert isinstance(again, RunStep) and again.step.name == "check" and again.attempt == 2
    run.finish(Registry([V1]))
    assert run.state.status == WAITING


def test_timers_are_kept_while_blocked_and_re_armed_on_resume() -> None:
    wf = Workflow("nap", mk("a") >> sleep(30, name="nap") >> mk("b"), version="1")
    run = Run(Registry([wf]), "nap")
    run.send(ok(run.effects[0]), Registry([wf]))
    (timer,) = run.effects
    assert isinstance(timer, ArmTimer)
    other = Registry([Workflow("nap", mk("z"), version="2")])
    assert types(run.send(TimerDue("e", timer.timer_id), other)) == ["ExecutionBlocked"]
    assert timer.timer_id in run.state.timers  # not lost
    run.send(Recover("e"), Registry([wf]))
    assert [type(e) for e in run.effects] == [ArmTimer]
    run.finish(Registry([wf]))
    assert run.state.status == COMPLETED


def test_cancel_needs_no_definition_and_signals_past_the_limit_are_refused() -> None:
    run = parked_at_approval()
    only_v2 = Registry([V2])
    run.send(Recover("e"), only_v2)
    for i in range(MAX_KEPT_SIGNALS):
        run.send(SendSignal("e", "approval", i), only_v2)
    with pytest.raises(InvalidCommand, match="already keeps"):
        decide(run.state, SendSignal("e", "approval", "one more"), 99, only_v2)
    events = run.send(CancelExecution("e", "old code is gone"), only_v2)
    assert types(events) == ["ExecutionCancelled"]
    assert run.state.status == CANCELLED and run.state.blocked is None


def migrating(mapping: dict[str, str]) -> Workflow:
    return Workflow(
        "order", mk("check") >> mk("score") >> approval("approval", name="ok") >> mk("send"),
        version="v2", migrate_from={"v1": mapping},
    )  # fmt: skip


def test_a_declared_mapping_moves_the_execution_to_the_new_version() -> None:
    run = parked_at_approval()
    v2 = Registry([migrating({"check": "check", "approval": "ok", "ship": "send"})])
    events = run.send(Recover("e"), v2)
    assert types(events) == ["ExecutionMigrated"]
    assert events[0]["from"] == "v1" and events[0]["to"] == "v2" and events[0]["node"] == 2
    assert run.state.workflow_version == "v2" and run.state.status == WAITING
    events = run.send(SendSignal("e", "approval", {"approved": True}), v2)
    assert types(events) == ["SignalReceived", "StepCompleted", "StepScheduled"]
    assert events[1]["step"] == "ok" and events[2]["step"] == "send"
    run.finish(v2)
    assert run.state.status == COMPLETED and "send" in run.state.results


def test_a_blocked_execution_migrates_and_resumes_once_the_mapping_is_deployed() -> None:
    run = parked_at_approval()
    run.send(Recover("e"), Registry([V2]))
    run.send(SendSignal("e", "approval", "yes"), Registry([V2]))
    v2 = Registry([migrating({"approval": "ok"})])
    events = run.send(Recover("e"), v2)
    assert types(events) == ["ExecutionMigrated", "ExecutionResumed", "StepCompleted",
                             "StepScheduled"]  # fmt: skip
    run.finish(v2)
    assert run.state.status == COMPLETED


def test_a_mapping_that_does_not_cover_the_position_is_refused_and_stays_blocked() -> None:
    run = parked_at_approval()
    v2 = Registry([migrating({"check": "check", "ship": "send"})])  # the wait is not mapped
    events = run.send(Recover("e"), v2)
    assert types(events) == ["ExecutionBlocked"]
    assert "no mapping for wait 'approval'" in events[0]["reason"]
    assert run.state.status == BLOCKED and run.state.workflow_version == "v1"
    # kept, with no second ExecutionBlocked
    assert types(run.send(SendSignal("e", "approval", 1), v2)) == ["SignalReceived"]
    # Mapped onto a node of another kind: refused too, naming it.
    wrong = Registry([migrating({"approval": "send"})])
    events = run.send(Recover("e"), wrong)
    assert "which is not a wait" in events[0]["reason"]


def test_a_parallel_group_with_a_branch_that_would_never_run_is_refused() -> None:
    old = Workflow("p", [mk("a"), [mk("b"), mk("c")]], version="1")
    run = Run(Registry([old]), "p")
    run.send(ok(run.effects[0]), Registry([old]))
    new = Workflow("p", [mk("a"), [mk("b"), mk("c"), mk("d")]], version="2",
                   migrate_from={"1": {"a": "a", "b": "b", "c": "c"}})  # fmt: skip
    events = run.send(Recover("e"), Registry([new]))
    assert "branch 'd'" in events[0]["reason"] and run.state.status == BLOCKED


def test_mappings_are_checked_at_registration() -> None:
    with pytest.raises(WorkflowDefinitionError, match="'nope', which is not a node of"):
        Workflow("order", mk("a"), version="v2", migrate_from={"v1": {"a": "nope"}})
    with pytest.raises(WorkflowDefinitionError, match="several nodes onto 'a'"):
        Workflow("order", [mk("a")], version="v2", migrate_from={"v1": {"x": "a", "y": "a"}})
    with pytest.raises(WorkflowDefinitionError, match="this definition's own"):
        Workflow("order", mk("a"), version="v2", migrate_from={"v2": {}})
    # The old definition, when registered, is checked for the old names, and then retired:
    # its executions move to the new one instead of running on it.
    new = migrating({"check": "check", "approval": "ok", "ship": "send"})
    reg = Registry([V1, new])
    assert reg.get("order", "v1") is None and reg.migration("order", "v1") is new
    assert reg.versions("order") == ["v2"] and reg.get("order") is new
    assert Registry([new, V1]).get("order", "v1") is None  # either order
    bad = migrating({"check": "check", "gone": "send"})
    with pytest.raises(WorkflowDefinitionError, match="'gone', which is not a node of version"):
        Registry([V1, bad])
    with pytest.raises(WorkflowDefinitionError, match="'gone', which is not a node of version"):
        Registry([bad, V1])


def test_restore_blocks_what_it_lacks_and_resumes_what_it_can_run() -> None:
    run = parked_at_approval()
    assert workflow_header(run.state) == b"order\nv1"
    parked = recovery_header(run.state)
    assert parked[:1] == PARKED
    run.send(Recover("e"), Registry([V2]))
    assert recovery_header(run.state) == BLOCKED_FLAG
    table = {"a": b"x", "b": b"y", "c": b"z"}
    recovery = {"a": parked, "b": BLOCKED_FLAG, "c": PARKED}
    restored = _index(table, recovery, {"a": b"order\nv1", "b": b"order\nv1", "c": b"order\nv2"})
    assert restored.blocked == ["b"] and restored.versions[("order", "v1")] == ["a", "b"]
    assert restored.timers == []  # a blocked execution's timers wait for its resume
    # "a" to block; "b" (blocked) in case it never began: then it starts on v2, else nothing
    assert versions_to_touch(restored, Registry([V2])) == ["a", "b"]
    assert versions_to_touch(restored, Registry([V1, V2])) == ["b"]  # to resume
    v3 = Workflow("order", approval("x"), version="v3", migrate_from={"v1": {"approval": "x"}})
    # v1: to migrate (both); v2, which this worker lacks: to block
    assert versions_to_touch(restored, Registry([v3])) == ["a", "b", "c"]


def test_a_worker_with_a_bad_mapping_stops_at_start_with_one_clear_line(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cerebelum.cli.worker import load_registry

    (tmp_path / "bad_mapping_app.py").write_text(
        "from cerebelum import Workflow, step\n"
        "@step\ndef a(inputs): return 1\n"
        'w = Workflow("w", a, version="v2", migrate_from={"v1": {"a": "nope"}})\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit, match="'nope', which is not a node of version 'v2'"):
        load_registry("bad_mapping_app")


def test_the_mirror_folds_blocked_resumed_and_migrated_into_the_row() -> None:
    import orjson

    from cerebelum.mirror.fold import decode_event, fold

    def rows(log: list[dict[str, Any]]) -> Any:
        events = [decode_event(orjson.dumps(e), 0, i) for i, e in enumerate(log)]
        (execution,) = fold(events)
        return execution

    run = parked_at_approval()
    run.send(Recover("e"), Registry([V2]))
    assert (rows(run.log).status, rows(run.log).workflow_version) == (BLOCKED, "v1")
    run.send(Recover("e"), Registry([migrating({"approval": "ok"})]))
    assert (rows(run.log).status, rows(run.log).workflow_version) == (WAITING, "v2")


def test_workflows_list_versions_no_worker_runs_and_count_blocked_ones() -> None:
    from cerebelum.admin.workflows import LiveWorkflows, version_rows

    live = LiveWorkflows(("w1",), (), {"order": ("v2",)}, {("order", "v2"): ("w1",)})
    counts = {("order", "v2"): (3, 0), ("order", "v1"): (2, 2), ("gone", "v9"): (1, 1),
              ("cerebelum.limiter", "1"): (4, 0), ("cerebelum.schedule", "1"): (1, 0)}  # fmt: skip
    out = version_rows(live, counts)
    assert sorted(out) == ["gone", "order"]  # the built-in ones run on every worker
    assert [(r["version"], r["workers"], r["live_executions"], r["blocked_executions"])
            for r in out["order"]] == [("v2", ["w1"], 3, 0), ("v1", [], 2, 2)]  # fmt: skip
    assert out["gone"][0]["blocked_executions"] == 1 and out["gone"][0]["newest"] is False
    unknown = version_rows(live, None)["order"][0]  # PostgreSQL away: not known
    assert unknown["live_executions"] is None and unknown["blocked_executions"] is None
