"""The workflow model: nodes joined into a timeline, with rules for what follows each.

    @step(retry=RetryPolicy(max_attempts=5), timeout=30)
    async def charge(ctx, validate): ...              # receives validate's result by name

    order = Workflow(
        "order",
        validate >> [reserve, charge] >> approval("manager", timeout=3600) >> ship,
        rules=[diverge(charge, on=CardDeclined, then=fail())],
    )

Nodes: a step; a parallel group `[a, b]` (fan-out, then fan-in); `sleep(...)`, a durable
timer; `wait_for_signal(name)` / `approval(name)`, a wait for an external signal whose payload
becomes the node's result. A step's parameters are filled by name: `inputs`, `ctx`, or the result
of an earlier node. Names are checked when the workflow is built, so a typo fails at import.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cerebelum.core.ids import id_problem
from cerebelum.core.rules import BACK_TO, SKIP_TO, Action, RetryPolicy, Rule, fail
from cerebelum.errors import WorkflowDefinitionError

SPECIAL_PARAMS = frozenset({"inputs", "ctx"})

# A back_to loop runs at most this many jumps by default; past it the execution fails with a
# clear error instead of looping forever.
DEFAULT_MAX_ITERATIONS = 1_000


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a step knows about the run it belongs to."""

    execution_id: str
    workflow: str
    workflow_version: str
    step: str
    attempt: int
    iteration: int = 0

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and re-dispatches of this step (per loop iteration)."""
        return f"{self.execution_id}:{self.step}:{self.iteration}"


class _Chainable:
    """`a >> b`, `a >> [b, c]` and `[a, b] >> c` build timelines."""

    def __rshift__(self, other: Any) -> Timeline:
        return Timeline([self]).__rshift__(other)

    def __rrshift__(self, other: Any) -> Timeline:
        return Timeline([_as_node(other)]) >> self


class Step(_Chainable):
    """A named unit of work wrapping a plain or async function."""

    __slots__ = ("name", "fn", "is_async", "params", "retry", "timeout")

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.is_async = inspect.iscoroutinefunction(fn)
        self.params: tuple[str, ...] = tuple(inspect.signature(fn).parameters)
        self.retry = retry
        self.timeout = timeout

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def shape(self) -> str:
        return f"{self.name}({','.join(self.params)}){self.retry or ''}{self.timeout or ''}"

    def __repr__(self) -> str:
        return f"Step({self.name!r})"


def step(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Any:
    """Declare a step: `@step`, or `@step(retry=RetryPolicy(...), timeout=30)`."""
    if fn is None:
        return lambda f: Step(f, name=name, retry=retry, timeout=timeout)
    return Step(fn, name=name, retry=retry, timeout=timeout)


class Parallel(_Chainable):
    """Fan-out: the branches run at once; the next node runs when all have completed."""

    __slots__ = ("branches",)

    def __init__(self, branches: Iterable[Step]) -> None:
        self.branches = tuple(branches)

    @property
    def name(self) -> str:
        return "[" + ",".join(b.name for b in self.branches) + "]"

    def shape(self) -> str:
        return "[" + ",".join(b.shape() for b in self.branches) + "]"


class Sleep(_Chainable):
    """A durable timer: waits `seconds`, or until `until` (a datetime or epoch seconds)."""

    __slots__ = ("name", "seconds", "until")

    def __init__(self, seconds: float | None, until: float | None, name: str | None) -> None:
        self.seconds = seconds
        self.until = until
        self.name = name or ""

    def fire_at(self, now_ms: int) -> int:
        if self.until is not None:
            return int(self.until * 1000)
        return now_ms + int((self.seconds or 0) * 1000)

    def shape(self) -> str:
        return f"sleep:{self.name}:{self.seconds}:{self.until}"


def sleep(
    seconds: float | None = None, *, until: datetime | float | None = None, name: str | None = None
) -> Sleep:
    """A durable sleep node: survives worker restarts; costs memory, not CPU, while it waits."""
    if (seconds is None) == (until is None):
        raise ValueError("sleep takes exactly one of seconds or until=")
    if isinstance(until, datetime):
        until = until.timestamp()
    return Sleep(seconds, until, name)


class WaitForSignal(_Chainable):
    """Waits for the signal `signal`; its payload becomes this node's result."""

    __slots__ = ("name", "signal", "timeout", "on_timeout", "approval")

    def __init__(
        self,
        signal: str,
        timeout: float | None,
        on_timeout: Action,
        approval: bool,
        name: str | None,
    ) -> None:
        self.signal = signal
        self.name = name or signal
        self.timeout = timeout
        self.on_timeout = on_timeout
        self.approval = approval

    def shape(self) -> str:
        return f"wait:{self.name}:{self.signal}:{self.timeout}:{self.on_timeout}:{self.approval}"


def wait_for_signal(
    signal: str,
    *,
    timeout: float | None = None,
    on_timeout: Action | None = None,
    name: str | None = None,
) -> WaitForSignal:
    """Wait for a named signal. On timeout: `on_timeout` (default fail(); continue_() moves on
    with a None result; skip_to/back_to jump)."""
    return WaitForSignal(signal, timeout, on_timeout or fail(), False, name)


def approval(
    signal: str = "approval",
    *,
    timeout: float | None = None,
    on_timeout: Action | None = None,
    name: str | None = None,
) -> WaitForSignal:
    """Wait for a human's approval, sent as the signal `signal` with any JSON payload."""
    return WaitForSignal(signal, timeout, on_timeout or fail(), True, name)


Node = Step | Parallel | Sleep | WaitForSignal


def _as_node(item: Any) -> Node:
    if isinstance(item, (list, tuple)):
        if not item or not all(isinstance(s, Step) for s in item):
            raise TypeError("a parallel group is a non-empty list of @step functions")
        return Parallel(item) if len(item) > 1 else item[0]
    if isinstance(item, (Step, Parallel, Sleep, WaitForSignal)):
        return item
    raise TypeError(f"{item!r} is not a step, a list of steps, a sleep or a signal wait")


class Timeline:
    """Nodes in the order they run."""

    __slots__ = ("nodes",)

    def __init__(self, nodes: Iterable[Any]) -> None:
        self.nodes = [_as_node(n) for n in nodes]

    def __rshift__(self, other: Any) -> Timeline:
        tail = other.nodes if isinstance(other, Timeline) else [_as_node(other)]
        return Timeline([*self.nodes, *tail])

    def __rrshift__(self, other: Any) -> Timeline:
        return Timeline([_as_node(other), *self.nodes])

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)


class Workflow:
    """A named, versioned timeline of nodes, with the rules that steer it."""

    def __init__(
        self,
        name: str,
        timeline: Any,
        *,
        rules: Iterable[Rule] = (),
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
        version: str | None = None,
    ) -> None:
        if not isinstance(timeline, Timeline):
            timeline = Timeline(timeline if isinstance(timeline, list) else [timeline])
        self.name = name
        self.nodes: tuple[Node, ...] = tuple(timeline)
        self.rules = tuple(rules)
        self.max_iterations = max_iterations
        self._name_nodes()
        # node name -> index in the timeline; a parallel branch maps to its group's index
        self.index: dict[str, int] = {}
        self.steps: dict[str, Step] = {}
        self._validate()
        # The signals some node waits for; a signal of any other name is refused (machine.py).
        self.signals = frozenset(n.signal for n in self.nodes if isinstance(n, WaitForSignal))
        self.diverge_rules = _rules_by_node(self.rules, "diverge")
        self.branch_rules = _rules_by_node(self.rules, "branch")
        self.version = version or self._definition_hash()

    def _name_nodes(self) -> None:
        for i, node in enumerate(self.nodes):
            if isinstance(node, Sleep) and not node.name:
                node.name = f"sleep@{i}"

    def node_names(self, node: Node) -> tuple[str, ...]:
        return tuple(b.name for b in node.branches) if isinstance(node, Parallel) else (node.name,)

    def _validate(self) -> None:
        problem = id_problem(self.name, "a workflow's name")
        if problem is not None:
            raise WorkflowDefinitionError(self.name, problem)
        if not self.nodes:
            raise WorkflowDefinitionError(self.name, "a workflow needs at least one node")
        for i, node in enumerate(self.nodes):
            members = node.branches if isinstance(node, Parallel) else (node,)
            for member in members:
                if isinstance(member, Step):
                    for p in member.params:
                        if p not in SPECIAL_PARAMS and p not in self.index:
                            raise WorkflowDefinitionError(
                                self.name,
                                f"step {member.name!r} takes {p!r}, which is neither 'inputs', "
                                "'ctx' nor an earlier node",
                            )
                    self.steps[member.name] = member
            if isinstance(node, WaitForSignal) and (problem := id_problem(node.signal, "signal")):
                raise WorkflowDefinitionError(self.name, problem)
            for name in self.node_names(node):
                if name in self.index or name in SPECIAL_PARAMS:
                    raise WorkflowDefinitionError(self.name, f"node name {name!r} is used twice")
            for name in self.node_names(node):
                self.index[name] = i
        for rule in self.rules:
            if rule.node not in self.index:
                raise WorkflowDefinitionError(
                    self.name, f"{rule.describe()}: no node {rule.node!r}"
                )
            self._check_target(rule.then, rule.describe())
        for node in self.nodes:
            if isinstance(node, WaitForSignal):
                self._check_target(node.on_timeout, f"on_timeout of {node.name!r}")

    def _check_target(self, action: Action, where: str) -> None:
        if action.kind in (BACK_TO, SKIP_TO) and action.target not in self.index:
            raise WorkflowDefinitionError(self.name, f"{where}: no node {action.target!r}")

    def _definition_hash(self) -> str:
        """A version that changes when the shape of the workflow changes."""
        shape = "|".join(n.shape() for n in self.nodes)
        shape += "||" + "|".join(r.describe() + _code_of(r.when) for r in self.rules)
        return hashlib.sha256(shape.encode()).hexdigest()[:12]

    def graph(self) -> dict[str, Any]:
        """The workflow's shape as JSON-ready data: its nodes in order (steps, parallel groups,
        sleeps, waits for signals and approvals) and the rules that branch, loop or diverge
        (GET /workflows, the dashboard's drawing)."""
        return {
            "name": self.name,
            "version": self.version,
            "max_iterations": self.max_iterations,
            "nodes": [_node_graph(i, node) for i, node in enumerate(self.nodes)],
            "rules": [
                {
                    "kind": r.kind,
                    "node": r.node,
                    "on": list(r.on),
                    "when": getattr(r.when, "__name__", None) if r.when else None,
                    "then": _action_graph(r.then),
                    "text": r.describe(),
                }
                for r in self.rules
            ],  # fmt: skip
        }

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, version={self.version!r})"


def _node_graph(index: int, node: Node) -> dict[str, Any]:
    if isinstance(node, Parallel):
        return {"index": index, "kind": "parallel", "name": node.name,
                "branches": [_node_graph(index, b) for b in node.branches]}  # fmt: skip
    if isinstance(node, Sleep):
        return {"index": index, "kind": "sleep", "name": node.name, "seconds": node.seconds,
                "until": node.until}  # fmt: skip
    if isinstance(node, WaitForSignal):
        return {"index": index, "kind": "approval" if node.approval else "signal",
                "name": node.name, "signal": node.signal, "timeout_s": node.timeout,
                "on_timeout": _action_graph(node.on_timeout)}  # fmt: skip
    retry = node.retry
    return {
        "index": index, "kind": "step", "name": node.name, "inputs": list(node.params),
        "timeout_s": node.timeout,
        "retry": None if retry is None else {
            "max_attempts": retry.max_attempts, "initial_interval_s": retry.initial_interval,
            "backoff": retry.backoff, "max_interval_s": retry.max_interval,
            "non_retryable": list(retry.non_retryable)},
    }  # fmt: skip


def _action_graph(action: Action) -> dict[str, Any]:
    return {"kind": action.kind, "target": action.target, "reason": action.reason}


def _code_of(fn: Callable[..., Any] | None) -> str:
    """A predicate's source, so editing a rule's condition changes the version (source, not
    bytecode: workers on different Python versions must agree on the version)."""
    if fn is None:
        return ""
    try:
        return inspect.getsource(fn).strip()
    except (OSError, TypeError):
        return getattr(fn, "__qualname__", "")


def _rules_by_node(rules: tuple[Rule, ...], kind: str) -> dict[str, tuple[Rule, ...]]:
    out: dict[str, list[Rule]] = {}
    for r in rules:
        if r.kind == kind:
            out.setdefault(r.node, []).append(r)
    return {k: tuple(v) for k, v in out.items()}


class Registry:
    """The workflows a worker can run, by name and version.

    Several versions of one workflow may be registered side by side, so executions started on
    an old definition finish on it while new ones start on the newest (the last registered).
    """

    def __init__(self, workflows: Iterable[Workflow] = ()) -> None:
        self._latest: dict[str, Workflow] = {}
        self._versions: dict[tuple[str, str], Workflow] = {}
        for wf in workflows:
            self.add(wf)

    def add(self, wf: Workflow) -> None:
        known = self._versions.get((wf.name, wf.version))
        if known is not None and known is not wf:
            raise WorkflowDefinitionError(
                wf.name, f"two definitions share version {wf.version!r}; declare distinct versions"
            )
        self._versions[(wf.name, wf.version)] = wf
        self._latest[wf.name] = wf

    def get(self, name: str, version: str | None = None) -> Workflow | None:
        """The newest definition of `name`, or exactly `version` of it."""
        if version is None:
            return self._latest.get(name)
        return self._versions.get((name, version))

    def names(self) -> list[str]:
        return sorted(self._latest)

    def versions(self, name: str) -> list[str]:
        return sorted(v for (n, v) in self._versions if n == name)

    def versions_newest_first(self, name: str) -> list[str]:
        """The version a new start runs (the last registered), then the older ones, the
        latest registered first."""
        newest = self._latest.get(name)
        if newest is None:
            return []
        older = [v for (n, v) in reversed(self._versions) if n == name and v != newest.version]
        return [newest.version, *older]

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any]) -> Registry:
        """Every Workflow found among a module's globals."""
        return cls(v for v in namespace.values() if isinstance(v, Workflow))
