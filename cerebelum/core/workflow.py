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
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cerebelum.core.ids import id_problem
from cerebelum.core.rules import BACK_TO, SKIP_TO, Action, RetryPolicy, Rule, fail
from cerebelum.errors import WorkflowDefinitionError

SPECIAL_PARAMS = frozenset({"inputs", "ctx"})

# A back_to loop runs at most this many jumps by default; past it the execution fails with a
# clear error instead of looping forever.
DEFAULT_MAX_ITERATIONS = 1_000


class StepLive:
    """A running step's line to its worker: heartbeats out, cancellation in. Plain attributes,
    each written by one side only (a thread step, the worker's event loop), so under the GIL
    no lock is needed."""

    __slots__ = ("beats", "last_beat", "details", "cancelled")

    def __init__(self) -> None:
        self.beats = 0
        self.last_beat = time.monotonic()
        self.details: Any = None
        self.cancelled = False


class Pending:
    """What a step returns to be completed from outside (`return ctx.pending(timeout=60)`)."""

    __slots__ = ("timeout",)

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout  # seconds; 0: no limit

    def __repr__(self) -> str:
        return f"Pending(timeout={self.timeout})"


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a step knows about the run it belongs to, and how it talks back to its worker."""

    execution_id: str
    workflow: str
    workflow_version: str
    step: str
    attempt: int
    iteration: int = 0
    # This run's token (the version of its StepScheduled): part of its completion token.
    token: int = 0
    live: StepLive = field(default_factory=StepLive, compare=False, repr=False)

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and re-dispatches of this step (per loop iteration)."""
        return f"{self.execution_id}:{self.step}:{self.iteration}"

    def heartbeat(self, details: Any = None) -> None:
        """Tell the worker this run is alive. A step declared with `heartbeat_timeout` must
        call this more often than that, or the run is given up as hung and retried under the
        step's retry policy; `details` (e.g. progress) go into that failure's message."""
        live = self.live
        live.beats += 1
        live.last_beat = time.monotonic()
        if details is not None:
            live.details = details

    @property
    def completion_token(self) -> str:
        """What to hand to the system that completes this run from outside (after the step
        returns `ctx.pending()`): the API's POST /completions, `cerebelum complete`,
        `Client.complete`, or a CompleteStep command take it."""
        return f"{self.execution_id}/{self.step}/{self.token}"

    def pending(self, timeout: float | None = None) -> Pending:
        """Return this from the step: the run is not over when the step returns; another
        system completes it later with `completion_token` (a result or an error), exactly
        once. Not completed within `timeout` seconds (None: no limit), it fails with
        StepTimeout, retried under the step's retry policy (a new run, a new token)."""
        if timeout is not None and not timeout > 0:
            raise ValueError(f"ctx.pending(timeout=...) must be positive seconds, not {timeout!r}")
        return Pending(timeout or 0.0)

    @property
    def cancelled(self) -> bool:
        """The execution ended (cancelled, or failed elsewhere) while this run was going: a
        plain (thread) step should stop; an async step is cancelled outright."""
        return self.live.cancelled


class _Chainable:
    """`a >> b`, `a >> [b, c]` and `[a, b] >> c` build timelines."""

    def __rshift__(self, other: Any) -> Timeline:
        return Timeline([self]).__rshift__(other)

    def __rrshift__(self, other: Any) -> Timeline:
        return Timeline([_as_node(other)]) >> self


# The most executions a concurrency limit lets run at once, and a rate limit's largest count:
# a limiter keeps its holders (or its last grant times) in its state.
MAX_LIMIT = 1_000


KeySource = str | Callable[[Any], Any] | None


def key_of(source: KeySource, inputs: Any, what: str) -> str:
    """The key `source` picks from an execution's inputs: a field name, or a function of the
    inputs; a string or an integer. ValueError naming what is missing."""
    if source is None:
        return "all"
    if callable(source):
        value = source(inputs)
    elif isinstance(inputs, dict) and source in inputs:
        value = inputs[source]
    else:
        raise ValueError(f"{what}: the inputs have no field {source!r}")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ValueError(f"{what}: the key must be a non-empty string or an integer, "
                         f"not {value!r}")  # fmt: skip
    return str(value)


class RateLimit:
    """At most `limit` runs of a step per `per_s` seconds across the cluster, per key
    (decisions.md §20): `@step(rate_limit=RateLimit(5, key="customer"))`. The bucket is named
    by `name` (default: the step's name), so steps of one name share it across workflows; a
    run past the rate waits for its permit (the execution shows as queued)."""

    __slots__ = ("limit", "per_s", "key", "name")

    def __init__(
        self, limit: int, per_s: float = 1.0, *, key: KeySource = None, name: str | None = None
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"a rate limit is a whole number from 1 to {MAX_LIMIT}, "
                             f"not {limit!r}")  # fmt: skip
        if not isinstance(per_s, (int, float)) or not 0.001 <= per_s <= 86_400:
            raise ValueError(f"per_s is a number of seconds from 0.001 to 86400, not {per_s!r}")
        if name is not None and (problem := id_problem(name, "a rate limit's name")):
            raise ValueError(problem)
        self.limit = limit
        self.per_s = per_s
        self.key = key
        self.name = name

    def __repr__(self) -> str:
        return f"RateLimit({self.limit}, per_s={self.per_s})"


class Step(_Chainable):
    """A named unit of work wrapping a plain or async function."""

    __slots__ = ("name", "fn", "is_async", "params", "retry", "timeout", "heartbeat_timeout",
                 "rate_limit")  # fmt: skip

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        heartbeat_timeout: float | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.is_async = inspect.iscoroutinefunction(fn)
        self.params: tuple[str, ...] = tuple(inspect.signature(fn).parameters)
        self.retry = retry
        for what, seconds in (("timeout", timeout), ("heartbeat_timeout", heartbeat_timeout)):
            if seconds is not None and not seconds > 0:
                raise ValueError(
                    f"step {self.name!r}: {what} must be a positive number of seconds, "
                    f"not {seconds!r}"
                )
        if heartbeat_timeout is not None and "ctx" not in self.params:
            raise ValueError(
                f"step {self.name!r} declares heartbeat_timeout but takes no 'ctx' parameter "
                "to call ctx.heartbeat() with"
            )
        self.timeout = timeout
        self.heartbeat_timeout = heartbeat_timeout
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise ValueError(f"step {self.name!r}: rate_limit takes a RateLimit(...)")
        # Not part of the shape: changing a rate leaves the version (and live runs) alone.
        self.rate_limit = rate_limit

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def shape(self) -> str:
        # The heartbeat timeout only when set: the shapes (and so the versions) of workflows
        # declared before it existed stay the same.
        beat = f"hb{self.heartbeat_timeout}" if self.heartbeat_timeout else ""
        return f"{self.name}({','.join(self.params)}){self.retry or ''}{self.timeout or ''}{beat}"

    def __repr__(self) -> str:
        return f"Step({self.name!r})"


def step(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    heartbeat_timeout: float | None = None,
    rate_limit: RateLimit | None = None,
) -> Any:
    """Declare a step: `@step`, or `@step(retry=RetryPolicy(...), timeout=30)`.

    `timeout`: a run longer than this fails with StepTimeout (default: the worker's
    CEREBELUM_STEP_TIMEOUT_S). `heartbeat_timeout`: a run that goes this long without
    `ctx.heartbeat()` fails with StepHeartbeatTimeout. Both failures are retried under `retry`.
    `rate_limit`: RateLimit(n, per_s, key=...), each attempt waits for a permit.
    """

    def make(f: Callable[..., Any]) -> Step:
        return Step(f, name=name, retry=retry, timeout=timeout,
                    heartbeat_timeout=heartbeat_timeout, rate_limit=rate_limit)  # fmt: skip

    return make if fn is None else make(fn)


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


class Child(_Chainable):
    """A child workflow run as its own execution, on its own partition (`child`), or one per
    item of a list, all at once (`children`): the parent waits for them durably and receives
    the output (a list of outputs, in order) by the node's name, like a step's result."""

    __slots__ = ("name", "workflow", "make", "params", "each")

    def __init__(self, workflow: str, inputs: Any, name: str | None, each: bool) -> None:
        self.workflow = workflow
        self.name = name or workflow
        self.each = each
        for what, value in (("child workflow", workflow), ("child node name", self.name)):
            if (problem := id_problem(value, what)) is not None:
                raise ValueError(problem)
        if callable(inputs):
            self.make: Callable[..., Any] | None = inputs
            self.params: tuple[str, ...] = tuple(inspect.signature(inputs).parameters)
            self._constant: Any = None
        else:
            if each and not isinstance(inputs, (list, tuple)):
                raise ValueError(f"children({workflow!r}, each=...) takes a list or a function")
            self.make = None
            self.params = ()
            self._constant = list(inputs) if each else (inputs if inputs is not None else {})

    def inputs(self, kwargs: dict[str, Any]) -> Any:
        """The child's inputs (with `each`: the list of them) from the parent's state."""
        return self.make(**kwargs) if self.make is not None else self._constant

    def shape(self) -> str:
        made = _code_of(self.make) if self.make is not None else repr(self._constant)
        kind = "children" if self.each else "child"
        return f"{kind}:{self.name}:{self.workflow}:{','.join(self.params)}:{made}"

    def __repr__(self) -> str:
        return f"Child({self.workflow!r}, name={self.name!r}, each={self.each})"


def child(workflow: str, inputs: Any = None, *, name: str | None = None) -> Child:
    """Run the workflow `workflow` as a child execution. `inputs`: its inputs, or a function
    of the parent's `inputs` and earlier results (by parameter name, like a step's) returning
    them. Its output is this node's result (named `name`, default the workflow's name); its
    failure is this node's failure (`ChildFailed`), which diverge rules can catch. Cancelling
    the parent cancels it."""
    return Child(workflow, inputs, name, each=False)


def children(workflow: str, each: Any, *, name: str | None = None) -> Child:
    """Fan out: one child execution of `workflow` per item of `each` (a list of inputs, or a
    function returning one), all at once; the result is the list of their outputs, in order.
    The first child to fail fails the node and cancels the others."""
    return Child(workflow, each, name, each=True)


Node = Step | Parallel | Sleep | WaitForSignal | Child


def _as_node(item: Any) -> Node:
    if isinstance(item, (list, tuple)):
        if not item or not all(isinstance(s, Step) for s in item):
            raise TypeError("a parallel group is a non-empty list of @step functions")
        return Parallel(item) if len(item) > 1 else item[0]
    if isinstance(item, (Step, Parallel, Sleep, WaitForSignal, Child)):
        return item
    raise TypeError(
        f"{item!r} is not a step, a list of steps, a sleep, a signal wait or a child workflow"
    )


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
        migrate_from: Mapping[str, Mapping[str, str]] | None = None,
        concurrency_key: KeySource = None,
        concurrency_limit: int = 1,
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
        # Old version -> {its node name: this version's node name} (decisions.md §6): an
        # execution of that version, on a worker without it, moves to this one.
        self.migrate_from = self._check_migrations(migrate_from or {})
        # At most concurrency_limit live executions per key (decisions.md §20); the rest are
        # queued in order. Not part of the version: changing a limit strands no execution.
        if (isinstance(concurrency_limit, bool) or not isinstance(concurrency_limit, int)
                or not 1 <= concurrency_limit <= MAX_LIMIT):  # fmt: skip
            raise WorkflowDefinitionError(
                name, f"concurrency_limit is a whole number from 1 to {MAX_LIMIT}"
            )
        if concurrency_key is not None and not (
            callable(concurrency_key) or isinstance(concurrency_key, str)
        ):
            raise WorkflowDefinitionError(
                name, "concurrency_key names an input field or is a function of the inputs"
            )
        self.concurrency_key = concurrency_key
        self.concurrency_limit = concurrency_limit

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
                if isinstance(member, Child):
                    for p in member.params:
                        if p != "inputs" and p not in self.index:
                            raise WorkflowDefinitionError(
                                self.name,
                                f"the inputs of child {member.name!r} take {p!r}, which is "
                                "neither 'inputs' nor an earlier node",
                            )
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

    def _check_migrations(
        self, migrate_from: Mapping[str, Mapping[str, str]]
    ) -> dict[str, dict[str, str]]:
        """The declared mappings, checked against this definition: a clear error at import
        (never at an execution) for a name this version lacks or two names mapped onto one."""
        out: dict[str, dict[str, str]] = {}
        for old, mapping in migrate_from.items():
            if not isinstance(old, str) or not old:
                raise WorkflowDefinitionError(self.name, f"migrate_from: bad version {old!r}")
            if old == self.version:
                raise WorkflowDefinitionError(
                    self.name, f"migrate_from: version {old!r} is this definition's own"
                )
            if not isinstance(mapping, Mapping):
                raise WorkflowDefinitionError(
                    self.name, f"migrate_from[{old!r}] must map old node names to new ones"
                )
            for source, target in mapping.items():
                if not isinstance(source, str) or not isinstance(target, str):
                    raise WorkflowDefinitionError(
                        self.name, f"migrate_from[{old!r}]: names must be strings"
                    )
                if target not in self.index:
                    raise WorkflowDefinitionError(
                        self.name,
                        f"migrate_from[{old!r}] maps {source!r} to {target!r}, which is not a "
                        f"node of version {self.version!r}",
                    )
            targets = list(mapping.values())
            twice = sorted({t for t in targets if targets.count(t) > 1})
            if twice:
                raise WorkflowDefinitionError(
                    self.name, f"migrate_from[{old!r}] maps several nodes onto {twice[0]!r}"
                )
            out[old] = dict(mapping)
        return out

    def check_migration_source(self, old: Workflow) -> None:
        """Raise WorkflowDefinitionError if the mapping from `old` names a node `old` lacks."""
        for source in self.migrate_from.get(old.version, {}):
            if source not in old.index:
                raise WorkflowDefinitionError(
                    self.name,
                    f"migrate_from[{old.version!r}] maps {source!r}, which is not a node of "
                    f"version {old.version!r}",
                )

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
            # old version -> {old node: new node}: executions of it move here (§6)
            "migrate_from": self.migrate_from,
            "concurrency": None
            if self.concurrency_key is None
            else {"key": _key_graph(self.concurrency_key), "limit": self.concurrency_limit},
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
    if isinstance(node, Child):
        return {"index": index, "kind": "children" if node.each else "child", "name": node.name,
                "workflow": node.workflow, "inputs": list(node.params)}  # fmt: skip
    retry = node.retry
    return {
        "index": index, "kind": "step", "name": node.name, "inputs": list(node.params),
        "timeout_s": node.timeout,
        "rate_limit": None if node.rate_limit is None else {
            "limit": node.rate_limit.limit, "per_s": node.rate_limit.per_s,
            "key": _key_graph(node.rate_limit.key), "name": node.rate_limit.name or node.name},
        "retry": None if retry is None else {
            "max_attempts": retry.max_attempts, "initial_interval_s": retry.initial_interval,
            "backoff": retry.backoff, "max_interval_s": retry.max_interval,
            "non_retryable": list(retry.non_retryable)},
    }  # fmt: skip


def _key_graph(source: KeySource) -> str | None:
    """A key's source for the graph: the input field, or the function's name."""
    if source is None or isinstance(source, str):
        return source
    return getattr(source, "__name__", "function")


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

    A definition that a registered one migrates from (`migrate_from`) is not run: it is kept
    only to check the mapping's old names at registration, and its executions move to the
    definition that migrates from it (decisions.md §6).
    """

    def __init__(self, workflows: Iterable[Workflow] = ()) -> None:
        self._latest: dict[str, Workflow] = {}
        self._versions: dict[tuple[str, str], Workflow] = {}
        # (name, old version) -> the registered definition that declares a mapping from it
        self._migrations: dict[tuple[str, str], Workflow] = {}
        # Definitions given that a registered one migrates from: checked, never run.
        self._retired: dict[tuple[str, str], Workflow] = {}
        # Workflows other live workers of the group run and this one lacks -> their newest
        # version (kept current by the worker, worker/elsewhere.py): a start of one is held as
        # blocked, not refused (decisions.md §6).
        self.elsewhere: dict[str, str] = {}
        for wf in workflows:
            self.add(wf)

    def add(self, wf: Workflow) -> None:
        key = (wf.name, wf.version)
        known = self._versions.get(key) or self._retired.get(key)
        if known is not None and known is not wf:
            raise WorkflowDefinitionError(
                wf.name, f"two definitions share version {wf.version!r}; declare distinct versions"
            )
        for old in wf.migrate_from:
            other = self._migrations.get((wf.name, old))
            if other is not None and other is not wf:
                raise WorkflowDefinitionError(
                    wf.name,
                    f"versions {other.version!r} and {wf.version!r} both migrate from {old!r}",
                )
        if key in self._migrations:  # a newer definition migrates from this one: retire it
            self._migrations[key].check_migration_source(wf)
            self._retired[key] = wf
            return
        for old in wf.migrate_from:
            self._migrations[(wf.name, old)] = wf
            source = self._versions.pop((wf.name, old), None)
            if source is not None:
                wf.check_migration_source(source)
                self._retired[(wf.name, old)] = source
        self._versions[key] = wf
        self._latest[wf.name] = wf

    def get(self, name: str, version: str | None = None) -> Workflow | None:
        """The newest definition of `name`, or exactly `version` of it."""
        if version is None:
            return self._latest.get(name)
        return self._versions.get((name, version))

    def migration(self, name: str, version: str) -> Workflow | None:
        """The registered definition that declares a mapping from `version`, if any."""
        return self._migrations.get((name, version))

    def can_resume(self, name: str, version: str) -> bool:
        """True if an execution of `version` can go on here (run, or be migrated)."""
        key = (name, version)
        return key in self._versions or key in self._migrations

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
