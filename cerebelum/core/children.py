"""Child workflows (decisions.md §18): a node that runs other workflows as executions of their
own and waits for them. Pure; `d` is the deciding machine._Decider.

1. entering the node starts the children: ChildrenStarted, and a start command for each
   (SendCommand: produced in the transaction that records it);
2. each child's end reaches the parent as ChildEnded: ChildCompleted, and the node's
   StepCompleted with the last one, or its StepFailed with the first failure;
3. a decision that leaves the node (the parent ended, failed there, jumped away) cancels the
   children still running; a child that ends tells its parent.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cerebelum.core import events as ev
from cerebelum.core.commands import (
    MAX_COMMAND_BYTES,
    ChildEnded,
    cancel_command,
    child_ended_command,
    start_command,
)
from cerebelum.core.events import error_info
from cerebelum.core.ids import MAX_ID_LENGTH
from cerebelum.core.state import COMPLETED, FAILED, Execution
from cerebelum.core.workflow import Child

# A fan-out starts at most this many children at once (each is a command in one transaction).
MAX_CHILDREN = 1_000


def child_id(parent: str, name: str, index: int | None, iteration: int) -> str:
    """A child execution's id, derived from its parent's and its place (so that a start made
    again is the same start): parent.node[.index][~iteration], hashed when over the limit."""
    cid = parent + "." + name
    if index is not None:
        cid += f".{index}"
    if iteration:
        cid += f"~{iteration}"
    if len(cid) > MAX_ID_LENGTH:
        cid = parent[:120] + "." + hashlib.sha256(cid.encode()).hexdigest()[:40]
    return cid


def start(d: Any, node: Child, index: int) -> None:
    """Start the node's child executions (in this decision's transaction) and wait."""
    s = d.s
    kwargs = {p: (s.inputs if p == "inputs" else s.results.get(p)) for p in node.params}
    try:
        made = node.inputs(kwargs)
    except Exception as exc:  # the user's function: its failure fails the run, clearly
        what = f"the inputs of child {node.name!r} raised {type(exc).__name__}: {exc}"
        d.fail("ChildInputsError", what, node.name)
        return
    if node.each and not isinstance(made, (list, tuple)):
        what = f"children {node.name!r}: each= must give a list, not {type(made).__name__}"
        d.fail("ChildInputsError", what, node.name)
        return
    items = list(made) if node.each else [made]
    if len(items) > MAX_CHILDREN:
        d.fail("LimitExceeded", f"children {node.name!r}: {len(items)} children, over "
                  f"the limit of {MAX_CHILDREN}", node.name)  # fmt: skip
        return
    ids, values = [], []
    for k, item in enumerate(items):
        cid = child_id(s.id, node.name, k if node.each else None, s.iteration)
        parent = {"execution_id": s.id, "step": node.name, "index": k}
        try:
            value = start_command(cid, node.workflow, item, s.traceparent, parent)
        except TypeError as exc:
            d.fail("ChildInputsError", f"child {node.name!r}: {exc}", node.name)
            return
        if len(value) > MAX_COMMAND_BYTES:
            d.fail("LimitExceeded", f"the inputs of child {cid!r} take {len(value)} "
                      f"bytes, over the limit of {MAX_COMMAND_BYTES}", node.name)  # fmt: skip
            return
        ids.append(cid)
        values.append(value)
    d.record(ev.CHILDREN_STARTED, step=node.name, node=index, workflow=node.workflow,
                children=ids)  # fmt: skip
    d.effects.extend(d.send(cid, v) for cid, v in zip(ids, values, strict=True))
    if not ids:  # an empty fan-out is done at once
        d.record(ev.STEP_COMPLETED, step=node.name, attempt=1, result=[])
        d.after_completed(node.name, 1)


def on_ended(d: Any, command: ChildEnded) -> None:
    """A child told its end: record it; the node completes with the last one, or fails
    with the first failure (its diverge rules apply; the other children are cancelled)."""
    s = d.s
    c = s.children.get(command.step)
    k = command.index
    if c is None or k >= len(c["ids"]) or c["ids"][k] != command.child or c["done"][k]:
        return  # a node left meanwhile (its children were cancelled), or a repeat
    d.children_ended.add(command.child)
    name = command.step
    if command.status == COMPLETED:
        d.record(ev.CHILD_COMPLETED, step=name, index=k, child=command.child,
                    output=command.output)  # fmt: skip
        c = d.s.children[name]
        if all(c["done"]):
            node = d.wf.nodes[d.wf.index[name]]
            each = isinstance(node, Child) and node.each
            result = list(c["outputs"]) if each else c["outputs"][0]
            d.record(ev.STEP_COMPLETED, step=name, attempt=1, result=result)
            d.after_completed(name, 1)
        return
    child_error = command.error or {}
    types = list(child_error.get("types") or [child_error.get("type", "Error")])
    error = {
        "type": "ChildFailed",
        "types": [*types, "ChildFailed"],
        "message": f"child {command.child!r} {command.status}: "
        f"{child_error.get('type', 'Error')}: {child_error.get('message', '')}"[:2000],
        "child": command.child,
    }
    d.record(ev.STEP_FAILED, step=name, attempt=1, error=error)
    d.after_failed(name, 1, error)


def cancel_left(d: Any, s: Execution) -> None:
    """Children still running whose node this decision left (it ended, failed, or jumped
    away): cancelled, in the same transaction."""
    if not d.children_before:
        return
    running = {cid for c in s.children.values() for cid in c["ids"]}
    reason = f"its parent {s.id!r} " + ("ended" if s.terminal else "left the node")
    for cid in d.children_before:
        if cid not in running and cid not in d.children_ended:
            d.effects.append(d.send(cid, cancel_command(cid, reason)))


def tell_parent(d: Any, s: Execution) -> None:
    """A child execution ended: its parent hears of it (in the same transaction)."""
    assert s.parent is not None
    error = None if s.status == COMPLETED else s.error
    value = child_ended_command(s.parent, s.id, s.status, s.output, error)
    if len(value) > MAX_COMMAND_BYTES:
        error = error_info(
            "ChildOutputTooLarge", f"the output of child {s.id!r} is {len(value)} bytes, "
            f"over the limit of {MAX_COMMAND_BYTES}", types=["ChildOutputTooLarge"],
        )  # fmt: skip
        value = child_ended_command(s.parent, s.id, FAILED, None, error)
    d.effects.append(d.send(s.parent["execution_id"], value))
