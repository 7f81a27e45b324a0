"""Moving an execution to another version of its workflow on purpose (decisions.md §6).

A definition declares `migrate_from={"v1": {"old node": "new node", ...}}`. An execution of v1,
on a worker that has no v1 but has that definition, moves to it if the mapping covers where
the execution stands, and only then:

1. every node it is on (steps in flight or waiting for a retry, a sleep's timer, a wait for a
   signal, children running) is named in the mapping;
2. their new names are all on one node of the new version, of the same kind (a step or a
   parallel branch for a step, a sleep for a sleep, a wait for a wait);
3. a parallel group of the new version has nothing left that would never run: each of its
   branches is either mapped from one still pending, or already has a result.

Otherwise it is refused, with the reason naming what is not covered, and the execution stays
blocked. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from cerebelum.core.state import Execution
from cerebelum.core.workflow import Child, Node, Parallel, Sleep, Step, WaitForSignal, Workflow


def migration_problem(state: Execution, new: Workflow) -> tuple[str | None, dict[str, Any]]:
    """(None, the ExecutionMigrated fields) if `new`'s mapping from the execution's version
    covers where it stands; else (why not, {})."""
    old = state.workflow_version
    mapping = new.migrate_from.get(old, {})
    where = _position(state)
    if not where:
        return f"execution {state.id!r} stands on no node the mapping could name", {}
    nodes: set[int] = set()
    for name, kind in sorted(where.items()):
        target = mapping.get(name)
        if target is None:
            return (
                f"version {new.version!r} declares no mapping for {kind} {name!r} of version "
                f"{old!r}, where execution {state.id!r} stands",
                {},
            )
        index = new.index[target]
        node = new.nodes[index]
        if not _same_kind(kind, node):
            return (
                f"the mapping of version {new.version!r} moves {kind} {name!r} onto "
                f"{target!r}, which is not a {kind} in version {new.version!r}",
                {},
            )
        nodes.add(index)
    if len(nodes) > 1:
        return (
            f"the mapping of version {new.version!r} spreads {sorted(where)} over several "
            f"nodes of version {new.version!r}",
            {},
        )
    (index,) = nodes
    node = new.nodes[index]
    if isinstance(node, Parallel):
        done = {mapping.get(name, name) for name in state.results}
        pending = {mapping[name] for name in where}
        left = [b.name for b in node.branches if b.name not in pending and b.name not in done]
        if left:
            return (
                f"branch {left[0]!r} of version {new.version!r}'s parallel group {node.name} "
                f"has no counterpart in execution {state.id!r} (it would never run)",
                {},
            )
    signal = node.signal if isinstance(node, WaitForSignal) else None
    fields = {"from": old, "to": new.version, "mapping": mapping, "node": index, "signal": signal}
    return None, fields


def _position(state: Execution) -> dict[str, str]:
    """The old version's node names the execution is on -> their kind."""
    where = dict.fromkeys([*state.attempts, *state.running], "step")
    wait_name = state.waiting
    for timer in state.timers.values():
        purpose = timer["purpose"]
        if purpose == "sleep":
            where[timer["step"]] = "sleep"
        elif purpose == "signal_timeout":
            wait_name = timer["step"]  # the wait's node name (its signal unless named)
        else:
            where[timer["step"]] = "step"
    if state.waiting is not None and wait_name is not None:
        where[wait_name] = "wait"
    for name in state.children:
        where[name] = "child"
    return where


def _same_kind(kind: str, node: Node) -> bool:
    if kind == "step":
        return isinstance(node, (Step, Parallel))
    if kind == "sleep":
        return isinstance(node, Sleep)
    if kind == "child":
        return isinstance(node, Child)
    return isinstance(node, WaitForSignal)
