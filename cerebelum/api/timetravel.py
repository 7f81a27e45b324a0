"""An execution's state at any version of its history, and what changed between two versions.

The state is what the worker held after that event: the core's own fold (`cerebelum.core.apply`)
of the history from the first event up to the version, so it is the same code, not a copy of it.
The difference is a list of changes at dotted paths, smallest first: a key added, removed, or a
value changed (lists compare whole).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cerebelum.core.apply import apply
from cerebelum.core.events import Event
from cerebelum.core.state import Execution


def states_at(events: Iterable[Event], versions: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The state after each of `versions` (each ≥ 1), folding `events` (in version order, from
    version 1) once."""
    wanted = sorted(set(versions))
    found: dict[int, dict[str, Any]] = {}
    state: Execution | None = None
    for event in events:
        if not wanted:
            break
        state = apply(state, event)
        while wanted and state.version == wanted[0]:
            found[wanted.pop(0)] = _record(state)
    return found


def _record(state: Execution) -> dict[str, Any]:
    """The state as JSON-ready data; copied, because folding goes on mutating `state`."""
    return {name: _copied(value) for name, value in state.to_record().items()}


def _copied(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v) for v in value]
    return value


def diff(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """The changes that turn `before` into `after`: [{"path", "op": "added"|"removed"|
    "changed", "from"?, "to"?}], dicts compared key by key, anything else as a value."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[dict[str, Any]] = []
        for key in sorted(before.keys() | after.keys(), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in after:
                changes.append({"path": where, "op": "removed", "from": before[key]})
            elif key not in before:
                changes.append({"path": where, "op": "added", "to": after[key]})
            else:
                changes.extend(diff(before[key], after[key], where))
        return changes
    if before == after and type(before) is type(after):
        return []
    return [{"path": path, "op": "changed", "from": before, "to": after}]
