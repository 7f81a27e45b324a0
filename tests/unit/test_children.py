"""Child workflows in the pure core (decisions.md §18): a node that runs other workflows as
executions of their own and waits for them; their end reaches the parent as a command."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cerebelum.core import rules as r
from cerebelum.core.children import child_id
from cerebelum.core.commands import (
    CancelExecution,
    ChildEnded,
    SendSignal,
    StartExecution,
    child_ended_command,
    parse_command,
)
from cerebelum.core.machine import SendCommand, decide
from cerebelum.core.workflow import Registry, Workflow, approval, child, children, step
from cerebelum.errors import InvalidCommand
from tests.cluster_sim import Cluster

T0 = 1_700_000_000_000


@step
def invoice_lines(inputs: dict) -> dict:
    if inputs.get("fail"):
        raise ValueError(f"cannot bill {inputs['customer']}")
    return {"customer": inputs["customer"], "total": inputs["amount"] * 2}


@step
def collect(invoice: dict | None) -> dict:
    return {"billed": invoice}


@step
def collect_all(invoices: list) -> dict:
    return {"billed": invoices}


INVOICE = Workflow("invoice", [invoice_lines])
WAITING_CHILD = Workflow("waits", [approval("ok")])


def registry(*parents: Workflow) -> Registry:
    return Registry([INVOICE, WAITING_CHILD, *parents])


ONE = Workflow(
    "order",
    child("invoice", lambda inputs: {"customer": inputs["c"], "amount": 5}) >> collect,
)
MANY = Workflow(
    "batch",
    children(
        "invoice",
        each=lambda inputs: [{"customer": c, "amount": 1} for c in inputs["cs"]],
        name="invoices",
    )
    >> collect_all,
)


def test_a_child_runs_as_its_own_execution_and_its_output_is_the_nodes_result() -> None:
    c = Cluster(registry(ONE))
    c.start("o-1", "order", {"c": "c-42"})
    c.run_until_quiet()
    parent, kid = c.states["o-1"], c.states["o-1.invoice"]
    assert kid.status == "completed" and kid.parent == {
        "execution_id": "o-1", "step": "invoice", "index": 0}  # fmt: skip
    assert parent.status == "completed"
    assert parent.output == {"billed": {"customer": "c-42", "total": 10}}
    types = [e["type"] for e in c.logs["o-1"]]
    assert types[:3] == ["ExecutionStarted", "ChildrenStarted", "ChildCompleted"]
    assert c.logs["o-1.invoice"][0]["parent"]["execution_id"] == "o-1"


def test_a_fan_out_gives_the_outputs_in_order_whatever_order_they_end_in() -> None:
    reg = registry(MANY)
    state, _, effects = decide(None, StartExecution("b-1", "batch", {"cs": ["a", "b", "c"]}),
                               T0, reg)  # fmt: skip
    starts = [parse_command(e.value) for e in effects if isinstance(e, SendCommand)]
    assert [s.execution_id for s in starts] == [
        "b-1.invoices.0",
        "b-1.invoices.1",
        "b-1.invoices.2",
    ]
    assert [s.parent["index"] for s in starts] == [0, 1, 2]  # type: ignore[index]
    for k in (2, 0, 1):
        ended = parse_command(child_ended_command(
            {"execution_id": "b-1", "step": "invoices", "index": k}, f"b-1.invoices.{k}",
            "completed", {"n": k}, None))  # fmt: skip
        state, events, _ = decide(state, ended, T0 + k + 1, reg)
    assert state is not None and state.results["invoices"] == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_an_empty_fan_out_completes_at_once() -> None:
    c = Cluster(registry(MANY))
    c.start("b-2", "batch", {"cs": []})
    c.run_until_quiet()
    assert c.states["b-2"].output == {"billed": []} and list(c.states) == ["b-2"]


def test_a_failed_child_fails_the_node_and_the_others_are_cancelled() -> None:
    fan = Workflow("fan", children("waits", each=[{}, {}, {}], name="invoices") >> collect_all)
    c = Cluster(registry(fan))
    c.start("f-1", "fan", {})
    c.run_until_quiet()
    assert [c.states[f"f-1.invoices.{k}"].status for k in range(3)] == ["waiting"] * 3
    c.send(CancelExecution("f-1.invoices.1", "no"))  # one child ends badly
    c.run_until_quiet()
    parent = c.states["f-1"]
    assert parent.status == "failed" and parent.error["type"] == "ChildFailed"
    assert [c.states[f"f-1.invoices.{k}"].status for k in range(3)] == ["cancelled"] * 3
    failed = [e for e in c.logs["f-1"] if e["type"] == "StepFailed"][0]
    assert failed["error"]["types"] == ["Cancelled", "ChildFailed"]
    assert failed["error"]["child"] == "f-1.invoices.1"


def test_diverge_rules_apply_to_a_childs_failure() -> None:
    wf = Workflow(
        "tolerant",
        child("invoice", {"customer": "x", "amount": 1, "fail": True}) >> collect,
        rules=[r.diverge("invoice", on=ValueError, then=r.continue_())],
    )
    c = Cluster(registry(wf))
    c.start("t-1", "tolerant", {})
    c.run_until_quiet()
    assert c.states["t-1.invoice"].status == "failed"
    assert c.states["t-1"].status == "completed"
    assert c.states["t-1"].output == {"billed": None}


def test_cancelling_the_parent_cancels_its_children_and_their_end_is_ignored() -> None:
    wf = Workflow("parent", child("waits", {}, name="kid"))
    c = Cluster(registry(wf))
    c.start("p-1", "parent", {})
    c.run_until_quiet()
    c.send(CancelExecution("p-1", "changed my mind"))
    c.run_until_quiet()
    assert c.states["p-1"].status == "cancelled" and c.states["p-1.kid"].status == "cancelled"
    assert c.logs["p-1"][-1]["type"] == "ExecutionCancelled"  # the child's end changed nothing


def test_a_child_reports_how_it_ended() -> None:
    reg = registry()
    start = StartExecution(
        "k-1", "waits", {}, parent={"execution_id": "p", "step": "s", "index": 2}
    )
    state, events, effects = decide(None, start, T0, reg)
    assert events[0]["parent"] == {"execution_id": "p", "step": "s", "index": 2}
    assert not [e for e in effects if isinstance(e, SendCommand)]
    state, _, effects = decide(state, SendSignal("k-1", "ok", {"fine": True}), T0 + 1, reg)
    (told,) = [e for e in effects if isinstance(e, SendCommand)]
    ended = parse_command(told.value)
    assert isinstance(ended, ChildEnded) and told.execution_id == "p"
    assert (ended.step, ended.index, ended.child, ended.status) == ("s", 2, "k-1", "completed")
    assert ended.output == {"fine": True}


def test_stray_child_ends_change_nothing() -> None:
    reg = registry(ONE)
    state, _, _ = decide(None, StartExecution("o-2", "order", {"c": "c"}), T0, reg)
    for stray in (
        ChildEnded("o-2", "invoice", 0, "someone-else", "completed", 1),
        ChildEnded("o-2", "invoice", 5, "o-2.invoice", "completed", 1),
        ChildEnded("o-2", "nope", 0, "o-2.invoice", "completed", 1),
    ):
        assert decide(state, stray, T0 + 1, reg)[1] == []
    with pytest.raises(InvalidCommand, match="no execution"):
        decide(None, ChildEnded("ghost", "invoice", 0, "x", "completed"), T0, reg)


def test_inputs_that_raise_fail_the_parent_clearly() -> None:
    wf = Workflow("broken", child("invoice", lambda inputs: inputs["missing"]))
    state, events, _ = decide(None, StartExecution("x-1", "broken", {}), T0, registry(wf))
    assert state is not None and state.status == "failed"
    assert state.error["type"] == "ChildInputsError" and "KeyError" in state.error["message"]


def test_child_ids_are_derived_and_bounded() -> None:
    assert child_id("o-1", "invoice", None, 0) == "o-1.invoice"
    assert child_id("o-1", "invoices", 3, 0) == "o-1.invoices.3"
    assert child_id("o-1", "invoice", None, 2) == "o-1.invoice~2"  # a loop ran the node again
    long = child_id("x" * 200, "invoice", 7, 0)
    assert len(long) <= 200 and long == child_id("x" * 200, "invoice", 7, 0)


def test_a_child_node_checks_its_parameters_and_names() -> None:
    from cerebelum.errors import WorkflowDefinitionError

    with pytest.raises(WorkflowDefinitionError, match="neither 'inputs' nor an earlier node"):
        Workflow("w", child("invoice", lambda later: {}))
    with pytest.raises(ValueError, match="child workflow"):
        child("bad name")
    with pytest.raises(ValueError, match="takes a list or a function"):
        children("invoice", each={"not": "a list"})
    graph = Workflow("g", child("invoice", {}) >> collect).graph()
    assert graph["nodes"][0] == {"index": 0, "kind": "child", "name": "invoice",
                                 "workflow": "invoice", "inputs": []}  # fmt: skip


def test_the_wire_format_of_a_childs_end() -> None:
    raw = child_ended_command({"execution_id": "p", "step": "s", "index": 1}, "c", "failed", None,
                              {"type": "Boom", "message": "m"})  # fmt: skip
    ended = parse_command(raw)
    assert isinstance(ended, ChildEnded) and ended.error == {"type": "Boom", "message": "m"}
    for body, problem in [
        ({"step": "s", "index": -1, "child": "c", "status": "completed"}, "parent"),
        ({"step": "s", "index": 0, "child": "c", "status": "lost"}, "status"),
        ({"step": "s", "index": 0, "child": "c", "status": "failed"}, "needs an 'error'"),
    ]:
        body: dict[str, Any] = {"type": "ChildEnded", "execution_id": "p", **body}
        with pytest.raises(InvalidCommand, match=problem):
            parse_command(orjson.dumps(body))
