"""The execution state machine: `decide` turns an input into events and effects.

    decide(state, input, now, registry) -> (state', events, effects)

`decide` changes state only through `apply` (cerebelum.core.apply), so folding the events it
returns from nothing always gives the state the live worker holds (invariant 5). Effects are
what the worker must do once the events are durable: run a step, arm a timer.

`decide` never changes the state it is given: it works on a copy, so an input it refuses
(InvalidCommand) or a bug that makes it raise half-way leaves the caller's state as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from cerebelum.core import children, completions, limits
from cerebelum.core import events as ev
from cerebelum.core import rules as r
from cerebelum.core.apply import apply, fold
from cerebelum.core.commands import (
    CancelExecution,
    ChildEnded,
    CompleteStep,
    FailExecution,
    Input,
    Permit,
    Recover,
    SendSignal,
    StartExecution,
    StepOutcome,
    TimerDue,
    payload_size,
)
from cerebelum.core.events import Event, error_info, make_event
from cerebelum.core.ids import reserved_id_problem
from cerebelum.core.limits import LIMITER_WORKFLOW
from cerebelum.core.schedules import (
    SCHEDULE_VERSION,
    SCHEDULE_WORKFLOW,
    decide_schedule,
    parse_spec,
    schedule_id,
    start_schedule,
)
from cerebelum.core.state import BLOCKED, RUNNING, Execution
from cerebelum.core.versions import migration_problem
from cerebelum.core.workflow import (
    Child,
    Parallel,
    Registry,
    Sleep,
    Step,
    StepContext,
    WaitForSignal,
    Workflow,
)
from cerebelum.errors import InvalidCommand, LimitExceeded, UnknownWorkflow

__all__ = ["ArmTimer", "Decision", "Effect", "RunStep", "apply", "decide", "fold"]

# An execution whose history passes this many events fails: its snapshot and restore time grow
# with it, and a loop that long is almost always a bug. (back_to loops have their own guard.)
# The built-in executions that live for good (schedules, limiters) are exempt: their state is
# bounded whatever their history.
MAX_HISTORY = 10_000
UNBOUNDED_HISTORY = frozenset({SCHEDULE_WORKFLOW, LIMITER_WORKFLOW})

# Signals that arrive before their wait are kept in the execution's state (and so in every
# snapshot of it) until a wait takes them. At most this many, each at most this large: 512 KiB
# in all, a quarter of the 2 MiB snapshot limit (worker/batch.py), so a flood of early signals
# is refused (dead-lettered) instead of growing the state until the execution fails. Real
# early signals are few and small (an approval arriving a moment before its wait).
MAX_KEPT_SIGNALS = 32
MAX_KEPT_SIGNAL_BYTES = 16 * 1024

# Errors that no retry can cure: raised on purpose, or produced by the engine's own limits.
NON_RETRYABLE = frozenset({"StepError", "LimitExceeded"})

# A step that was in flight when its partition changed owner this many times runs isolated, in
# a child process, from then on: if it is what kills its worker (os._exit, a segfault, the OOM
# killer), it then kills only the child, and fails (StepCrashed) instead of taking every worker
# that takes the partition down in turn. Once is an ordinary failover; twice in a row is the
# signature of a poison step (DESIGN.md, invariant 9).
ISOLATE_AFTER_REDISPATCHES = 2


class RunStep:
    """Effect: run `step` with `kwargs` (within `step.timeout`) and report a StepOutcome
    carrying `token`, the version of the StepScheduled event this run answers. `isolated`: run
    it in a child process (see ISOLATE_AFTER_REDISPATCHES). `workflow` names the execution's
    workflow (for the worker's logs and metrics: a step may belong to several); `traceparent`
    the trace context its execution was started with, if any (for its span)."""

    __slots__ = (
        "execution_id", "step", "attempt", "token", "kwargs", "isolated", "workflow",
        "traceparent",
    )  # fmt: skip

    def __init__(
        self,
        execution_id: str,
        step: Step,
        attempt: int,
        token: int,
        kwargs: dict[str, Any],
        isolated: bool = False,
        workflow: str = "",
        traceparent: str | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.step = step
        self.attempt = attempt
        self.token = token
        self.kwargs = kwargs
        self.isolated = isolated
        self.workflow = workflow
        self.traceparent = traceparent

    def __repr__(self) -> str:
        isolated = ", isolated" if self.isolated else ""
        return (
            f"RunStep({self.execution_id!r}, {self.step.name!r}, attempt={self.attempt}{isolated})"
        )


class ArmTimer:
    """Effect: deliver TimerDue(execution_id, timer_id) at `fire_at` (epoch ms)."""

    __slots__ = ("execution_id", "timer_id", "fire_at")

    def __init__(self, execution_id: str, timer_id: str, fire_at: int) -> None:
        self.execution_id = execution_id
        self.timer_id = timer_id
        self.fire_at = fire_at

    def __repr__(self) -> str:
        return f"ArmTimer({self.execution_id!r}, {self.timer_id!r}, {self.fire_at})"


class SendCommand:
    """Effect: produce `value` (a command) keyed by `execution_id` to its home partition, in
    the transaction that records this decision: a child's start, a parent's cancel of its
    children, a child's end told to its parent (decisions.md §18). Exactly once, with it."""

    __slots__ = ("execution_id", "value")

    def __init__(self, execution_id: str, value: bytes) -> None:
        self.execution_id = execution_id
        self.value = value

    def __repr__(self) -> str:
        return f"SendCommand({self.execution_id!r}, {self.value[:80]!r})"


Effect = RunStep | ArmTimer | SendCommand
Decision = tuple[Execution | None, list[Event], list[Effect]]


def decide(state: Execution | None, command: Input, now: int, registry: Registry) -> Decision:
    """The events and effects that `command` causes for the execution in `state`.

    Raises InvalidCommand (the worker sends the command to the DLQ) for a start of an unknown
    workflow, a signal or cancel for an execution that does not exist or has ended, or a signal
    its workflow never waits for or that would be kept past MAX_KEPT_SIGNALS(_BYTES).
    """
    limits.refuse(command, state)
    if isinstance(command, StartExecution):
        if (reserved := reserved_id_problem(command.execution_id, command.workflow)) is not None:
            raise InvalidCommand(reserved, command.execution_id)
        if state is not None:
            return state, [], []  # idempotent start: the execution exists already
        if command.workflow == SCHEDULE_WORKFLOW:  # built in: a schedule (decisions.md §19)
            return _start_schedule(command, now)
        wf = registry.get(command.workflow)
        version = wf.version if wf is not None else registry.elsewhere.get(command.workflow)
        if version is None:
            raise UnknownWorkflow(command.workflow, command.execution_id)
        d = _Decider(None, wf, now)  # type: ignore[arg-type]
        # The caller's trace context only when it gave one: histories without it keep their shape.
        trace: dict[str, Any] = (
            {"traceparent": command.traceparent} if command.traceparent is not None else {}
        )
        if command.parent is not None:  # a child execution: told to its parent when it ends
            trace["parent"] = command.parent
        d.record(
            ev.EXECUTION_STARTED,
            workflow=command.workflow,
            workflow_version=version,
            inputs=command.inputs,
            execution_id=command.execution_id,
            **trace,
        )
        if wf is None:  # another live worker has it: held until one of those owns it (§6)
            d.record(
                ev.EXECUTION_BLOCKED,
                waiting_for=version,
                versions_here=[],
                reason=f"this worker has no workflow {command.workflow!r}, which other live "
                "workers of the group run; it starts when one of them owns its partition",
                status=RUNNING,
            )
        elif not limits.queue_start(d, wf):
            d.enter(0)
        return d.finish()
    if (
        isinstance(command, Permit)
        and command.op != "grant"
        and (state is None or state.workflow == LIMITER_WORKFLOW)
    ):
        if state is None and command.op == "release":
            return None, [], []  # nothing was held
        d = _Decider(state.copy() if state is not None else None, None, now)  # type: ignore[arg-type]
        if state is None:
            limits.start_limiter(d, command)
        limits.decide_limiter(d, command)
        return d.finish()
    if state is None:
        if isinstance(command, (SendSignal, CancelExecution, CompleteStep, ChildEnded, Permit)):
            raise InvalidCommand(f"no execution {command.execution_id!r}", command.execution_id)
        return None, [], []
    if state.terminal:
        if isinstance(command, ChildEnded):
            return state, [], []  # a child of an ended parent: cancelled, or ended meanwhile
        if isinstance(command, (SendSignal, CancelExecution, CompleteStep)):
            what = _COMMAND_NAMES[type(command)]
            raise InvalidCommand(
                f"{what} for execution {command.execution_id!r}, which has ended ({state.status})",
                command.execution_id,
            )
        return state, [], []
    if state.workflow == SCHEDULE_WORKFLOW:
        d = _Decider(state.copy(), None, now)  # type: ignore[arg-type]
        decide_schedule(d, command)
        return d.finish()
    if state.workflow == LIMITER_WORKFLOW:
        d = _Decider(state.copy(), None, now)  # type: ignore[arg-type]
        limits.decide_limiter(d, command)
        return d.finish()
    wf = registry.get(state.workflow, state.workflow_version)
    if wf is None or state.status == BLOCKED:  # decisions.md §6
        d, done = _held_or_moved(state, wf, command, now, registry)
        if done:
            return d.finish()
        wf = d.wf
    else:
        d = _Decider(state.copy(), wf, now)
    if isinstance(command, StepOutcome):
        d.on_outcome(command)
    elif isinstance(command, TimerDue):
        d.on_timer(command.timer_id)
    elif isinstance(command, SendSignal):
        _check_signal(wf, state, command)
        d.on_signal(command.signal, command.payload)
    elif isinstance(command, CancelExecution):
        d.record(ev.EXECUTION_CANCELLED, reason=command.reason)
    elif isinstance(command, Recover):
        d.on_recover()
    elif isinstance(command, FailExecution):
        d.fail(command.error_type, command.message)
    elif isinstance(command, CompleteStep):
        completions.check(state, command)
        completions.complete(d, command)
    elif isinstance(command, ChildEnded):
        children.on_ended(d, command)
    elif isinstance(command, Permit):
        limits.on_grant(d, command)
    return d.finish()


NOTHING_AWAITED: Mapping[str, list[Any]] = MappingProxyType({})

_COMMAND_NAMES = {SendSignal: "signal", CancelExecution: "cancel", CompleteStep: "completion"}


def _start_schedule(command: StartExecution, now: int) -> Decision:
    try:
        spec = parse_spec(command.inputs)
    except ValueError as exc:
        raise InvalidCommand(f"schedule: {exc}", command.execution_id) from None
    if command.execution_id != schedule_id(spec["name"]):
        raise InvalidCommand(
            f"a schedule's execution id is {schedule_id(spec['name'])!r}", command.execution_id
        )
    d = _Decider(None, None, now)  # type: ignore[arg-type]
    d.record(ev.EXECUTION_STARTED, workflow=SCHEDULE_WORKFLOW, workflow_version=SCHEDULE_VERSION,
             inputs=spec, execution_id=command.execution_id)  # fmt: skip
    start_schedule(d)
    return d.finish()


def _check_signal(wf: Workflow, state: Execution, command: SendSignal) -> None:
    """Raise InvalidCommand for a signal `wf` never waits for, or one that would be kept (no
    wait takes it now) beyond the limits on kept signals."""
    if command.signal not in wf.signals:
        waits = ", ".join(repr(s) for s in sorted(wf.signals)) or "none"
        raise InvalidCommand(
            f"workflow {wf.name!r} never waits for signal {command.signal!r} (it waits for: "
            f"{waits})",
            command.execution_id,
        )
    if state.waiting == command.signal:
        return  # taken at once, never kept
    _check_kept(state, command)


def _check_kept(state: Execution, command: SendSignal) -> None:
    """Raise InvalidCommand / LimitExceeded for a signal that would be kept beyond the limits
    on kept signals."""
    kept = sum(len(queued) for queued in state.signals.values())
    if kept >= MAX_KEPT_SIGNALS:
        raise InvalidCommand(
            f"execution {command.execution_id!r} already keeps {kept} signals no wait has "
            f"taken yet (the limit is {MAX_KEPT_SIGNALS})",
            command.execution_id,
        )
    size = payload_size(command.payload)
    if size > MAX_KEPT_SIGNAL_BYTES:
        raise LimitExceeded(
            f"the payload of signal {command.signal!r}, which no wait takes yet,",
            size,
            MAX_KEPT_SIGNAL_BYTES,
            command.execution_id,
        )


def _held_or_moved(
    state: Execution, wf: Workflow | None, command: Input, now: int, registry: Registry
) -> tuple[_Decider, bool]:
    """An execution whose version this worker lacks, or that is blocked (decisions.md §6):
    the decider, and True if `command` was dealt with, else it is decided as usual next.

    1. Without its version here, it moves to a registered definition that declares a mapping
       from that version, if the mapping covers where it stands (ExecutionMigrated); else it
       is held: ExecutionBlocked (once per reason), and the command is kept in its state —
       a signal as a kept signal, a timer and a step in flight as they are (re-armed and run
       again when it resumes) — except a cancel, which needs no definition: it is cancelled.
    2. With a definition (its own, or the one it moved to), a blocked execution resumes
       (ExecutionResumed): its steps in flight run again, its timers are re-armed, a kept
       signal its wait waits for is taken; then the command is decided as usual (a Recover
       is done already). A refusal raised later (a bad signal) discards all of it: decide
       works on a copy.
    """
    migrated = None
    problem = None
    if wf is None and never_began(state):  # held before its first node: any version will do
        wf = registry.get(state.workflow)
    if wf is None:
        target = registry.migration(state.workflow, state.workflow_version)
        if target is not None:
            problem, migrated = migration_problem(state, target)
            if problem is None:
                wf = target
    if wf is None:
        d = _Decider(state.copy(), None, now)  # type: ignore[arg-type]
        d.hold(command, problem, registry.versions(state.workflow))
        return d, True
    d = _Decider(state.copy(), wf, now)
    if migrated is not None:
        d.record(ev.EXECUTION_MIGRATED, **migrated)
    if d.s.status == BLOCKED:
        d.resume()
        return d, isinstance(command, Recover)  # resuming re-issued what it was doing
    return d, False


def never_began(state: Execution) -> bool:
    """Held before it entered its first node (its start landed on a worker without its
    workflow, §6), or queued on a limit (§20): it can start on any version of its workflow."""
    return state.cursor < 0 and state.status == BLOCKED and not state.results


class _Decider:
    """One decision: records events (folding each at once) and collects effects."""

    __slots__ = ("state", "wf", "now", "events", "effects", "was_terminal", "children_before",
                 "children_ended", "awaiting_before", "admitted")  # fmt: skip

    def __init__(self, state: Execution | None, wf: Workflow, now: int) -> None:
        self.state = state
        self.wf = wf
        self.now = now
        self.events: list[Event] = []
        self.effects: list[Effect] = []
        self.was_terminal = state is not None and state.terminal
        # The children running before this decision, and those it heard the end of: a node
        # it leaves behind has the others cancelled.
        self.children_before: list[str] = [
            cid
            for c in (state.children.values() if state is not None else ())
            for cid, done in zip(c["ids"], c["done"], strict=True)
            if not done
        ]
        self.children_ended: set[str] = set()
        # Step runs waiting for a rate permit before this decision, and those it admitted: a
        # run it leaves behind gives its place in the limiter's queue back.
        # (Copied only when there is something: most decisions have no run waiting.)
        self.awaiting_before: Mapping[str, list[Any]] = (
            dict(state.awaiting) if state is not None and state.awaiting else NOTHING_AWAITED
        )
        self.admitted: set[str] = set()

    @property
    def s(self) -> Execution:
        assert self.state is not None
        return self.state

    def record(self, type_: str, execution_id: str | None = None, **fields: Any) -> None:
        state = self.state
        eid = execution_id if state is None else state.id
        version = 1 if state is None else state.version + 1
        event = make_event(eid, version, type_, self.now, **fields)  # type: ignore[arg-type]
        self.state = apply(state, event)
        self.events.append(event)

    def finish(self) -> Decision:
        s = self.state
        if (s is not None and not s.terminal and s.version >= MAX_HISTORY
                and s.workflow not in UNBOUNDED_HISTORY):  # fmt: skip
            self.effects.clear()
            self.fail("HistoryLimitExceeded", f"history passed {MAX_HISTORY} events")
        s = self.state
        if s is not None and self.events:
            children.cancel_left(self, s)
            if s.terminal and not self.was_terminal and s.parent is not None:
                children.tell_parent(self, s)
            limits.give_back(self, s)
        return self.state, self.events, self.effects

    # -- moving through the timeline -------------------------------------------------------

    def enter(self, index: int) -> None:
        nodes = self.wf.nodes
        if index >= len(nodes):
            self.record(ev.EXECUTION_COMPLETED, output=self._output())
            return
        node = nodes[index]
        if isinstance(node, Step):
            self.schedule(node, index, 1)
        elif isinstance(node, Parallel):
            for branch in node.branches:
                self.schedule(branch, index, 1)
        elif isinstance(node, Sleep):
            self.start_timer("sleep", node.name, index, node.fire_at(self.now))
        elif isinstance(node, WaitForSignal):
            self._await_signal(node, index)
        elif isinstance(node, Child):
            children.start(self, node, index)

    def arm(self, timer_id: str, fire_at: int) -> None:
        self.effects.append(ArmTimer(self.s.id, timer_id, fire_at))

    def send(self, execution_id: str, value: bytes) -> SendCommand:
        return SendCommand(execution_id, value)

    def start_timer(self, purpose: str, name: str, index: int, fire_at: int) -> None:
        """Record a durable timer on node `index` and arm it (ids: "sleep:..." / "signal:...")."""
        prefix = "sleep" if purpose == "sleep" else "signal"
        timer_id = f"{prefix}:{name}:{self.s.version + 1}"
        self.record(
            ev.TIMER_STARTED, timer_id=timer_id, fire_at=fire_at, step=name, node=index,
            purpose=purpose,
        )  # fmt: skip
        self.effects.append(ArmTimer(self.s.id, timer_id, fire_at))

    def advance(self) -> None:
        self.enter(self.s.cursor + 1)

    def _output(self) -> Any:
        last = self.wf.nodes[-1]
        results = self.s.results
        if isinstance(last, Parallel):
            return {b.name: results.get(b.name) for b in last.branches}
        return results.get(last.name)

    def schedule(self, step: Step, index: int, attempt: int) -> None:
        if not limits.schedule_step(self, step, index, attempt):  # else it waits for a permit
            self.record(ev.STEP_SCHEDULED, step=step.name, node=index, attempt=attempt)
            self.run(step)

    def run(self, step: Step) -> None:
        self.effects.append(run_step_effect(self.s, self.wf, step))

    def jump(self, action: r.Action, from_step: str) -> None:
        s = self.s
        iteration = s.iteration + 1 if action.kind == r.BACK_TO else s.iteration
        if iteration > self.wf.max_iterations:
            self.fail(
                "IterationLimitExceeded",
                f"back_to({action.target}) from {from_step!r} would run iteration {iteration}, "
                f"over the workflow's max_iterations={self.wf.max_iterations}",
                from_step,
            )
            return
        target = self.wf.index[action.target]  # type: ignore[index]
        self.record(
            ev.JUMP_TAKEN,
            from_step=from_step,
            to_step=action.target,
            node=target,
            kind=action.kind,
            iteration=iteration,
        )
        self.enter(target)

    def fail(self, type_: str, message: str, step: str | None = None) -> None:
        self.record(ev.EXECUTION_FAILED, error=error_info(type_, message, step))

    # -- inputs ----------------------------------------------------------------------------

    def on_outcome(self, out: StepOutcome) -> None:
        s = self.s
        if s.running.get(out.step) != out.token:
            return  # a stale report (an earlier attempt, a re-dispatch, a node left): ignore
        attempt = s.attempts[out.step]
        # Optional, absent when unknown: histories recorded before it read the same.
        ran_by = {"worker": out.worker} if out.worker else {}
        if out.ok and out.pending is not None:
            completions.pend(self, out.step, attempt, out.token, out.pending, ran_by)
        elif out.ok:
            self.record(
                ev.STEP_COMPLETED, step=out.step, attempt=attempt, result=out.value, **ran_by
            )
            self.after_completed(out.step, attempt)
        else:
            error = out.error or error_info("Error", "step failed")
            extra = {"traceback": out.traceback} if out.traceback else {}
            self.record(
                ev.STEP_FAILED, step=out.step, attempt=attempt, error=error, **extra, **ran_by
            )
            self.after_failed(out.step, attempt, error)

    def after_completed(self, name: str, attempt: int) -> None:
        result = self.s.results.get(name)
        for rule in self.wf.diverge_rules.get(name, ()):
            if rule.when is not None and self._holds(rule, result, name):
                self.follow(ev.DIVERGE_TAKEN, rule, name, attempt, None)
                return
            if self.s.terminal:
                return  # a predicate raised
        for rule in self.wf.branch_rules.get(name, ()):
            if self._holds(rule, result, name):
                self.follow(ev.BRANCH_TAKEN, rule, name, attempt, None)
                return
            if self.s.terminal:
                return
        if not self.s.attempts:  # every branch of the node is done
            self.advance()

    def _holds(self, rule: r.Rule, result: Any, name: str) -> bool:
        assert rule.when is not None
        try:
            return bool(rule.when(result))
        except Exception as exc:  # a broken predicate fails the run with a clear error
            self.fail("RuleError", f"{rule.describe()} raised {type(exc).__name__}: {exc}", name)
            return False

    def after_failed(self, name: str, attempt: int, error: dict[str, Any]) -> None:
        types = error.get("types") or [error.get("type", "Error")]
        for rule in self.wf.diverge_rules.get(name, ()):
            if rule.matches_error(types):
                self.follow(ev.DIVERGE_TAKEN, rule, name, attempt, error)
                return
        policy = self.wf.steps[name].retry if name in self.wf.steps else None
        if policy is not None and self._retryable(policy, attempt + 1, types):
            self.schedule_retry(name, attempt + 1, policy)
        else:
            self.fail(error.get("type", "Error"), error.get("message", ""), name)

    def follow(
        self, taken: str, rule: r.Rule, name: str, attempt: int, error: dict[str, Any] | None
    ) -> None:
        """Record that `rule` matched (DivergeTaken or BranchTaken), then carry out its action."""
        then = rule.then
        self.record(taken, step=name, rule=rule.describe(), action=then.kind, target=then.target)
        self.take(then, name, attempt, error)

    def take(self, action: r.Action, name: str, attempt: int, error: dict[str, Any] | None) -> None:
        kind = action.kind
        if kind == r.RETRY:
            step = self.wf.steps.get(name)
            policy = (step.retry if step else None) or r.DEFAULT_RETRY
            types = (error or {}).get("types") or []
            if step is not None and self._retryable(policy, attempt + 1, types):
                self.schedule_retry(name, attempt + 1, policy)
            else:
                message = (error or {}).get("message", "") or "retry requested"
                self.fail("RetriesExhausted", f"{name!r} failed {attempt} times: {message}", name)
        elif kind in (r.BACK_TO, r.SKIP_TO):
            self.jump(action, name)
        elif kind == r.FAIL:
            err_type = (error or {}).get("type", "Diverged")
            self.fail(
                err_type, action.reason or (error or {}).get("message", "failed by rule"), name
            )
        elif kind == r.CONTINUE:  # DivergeTaken(continue) already marked the step done
            if not self.s.attempts:
                self.advance()

    def _retryable(self, policy: r.RetryPolicy, next_attempt: int, types: list[str]) -> bool:
        return policy.allows(next_attempt, types) and not NON_RETRYABLE.intersection(types)

    def schedule_retry(self, name: str, attempt: int, policy: r.RetryPolicy) -> None:
        s = self.s
        delay = policy.delay_ms(attempt - 1, f"{s.id}:{name}:{s.iteration}")
        timer_id = f"retry:{name}:{s.version + 1}"
        fire_at = self.now + delay
        self.record(
            ev.STEP_RETRY_SCHEDULED,
            step=name,
            attempt=attempt,
            timer_id=timer_id,
            fire_at=fire_at,
            delay_ms=delay,
        )
        self.effects.append(ArmTimer(s.id, timer_id, fire_at))

    def on_timer(self, timer_id: str) -> None:
        s = self.s
        timer = s.timers.get(timer_id)
        if timer is None:
            return  # fired after its node was left, or twice
        self.record(ev.TIMER_FIRED, timer_id=timer_id)
        purpose, name = timer["purpose"], timer["step"]
        if purpose == "retry":
            self.schedule(self.wf.steps[name], s.cursor, s.attempts[name])
        elif purpose == "pending":
            if name in s.pending:
                attempt = s.attempts[name]
                error = error_info(
                    "StepTimeout",
                    f"step {name!r} was not completed from outside in time",
                    types=["StepTimeout", "TimeoutError"],
                )
                self.record(ev.STEP_FAILED, step=name, attempt=attempt, error=error)
                self.after_failed(name, attempt, error)
        elif purpose == "sleep":
            self.advance()
        elif purpose == "signal_timeout":
            node = self.wf.nodes[s.cursor]
            assert isinstance(node, WaitForSignal)
            action = node.on_timeout
            if action.kind == r.CONTINUE:
                self.record(
                    ev.STEP_COMPLETED, step=node.name, attempt=1, result=None, signal=node.signal
                )
                self.after_completed(node.name, 1)
            elif action.kind == r.FAIL:
                self.fail(
                    "SignalTimeout",
                    action.reason or f"signal {node.signal!r} not received within {node.timeout}s",
                    node.name,
                )
            else:
                self.jump(action, node.name)

    def _await_signal(self, node: WaitForSignal, index: int) -> None:
        s = self.s
        timeout_at = None if node.timeout is None else self.now + int(node.timeout * 1000)
        self.record(
            ev.APPROVAL_REQUESTED if node.approval else ev.SIGNAL_AWAITED,
            signal=node.signal,
            step=node.name,
            node=index,
            timeout_at=timeout_at,
        )
        queued = s.signals.get(node.signal)
        if queued:  # it arrived before the execution waited for it: kept, consumed now
            self.record(
                ev.STEP_COMPLETED, step=node.name, attempt=1, result=queued[0], signal=node.signal
            )
            self.after_completed(node.name, 1)
        elif timeout_at is not None:
            self.start_timer("signal_timeout", node.name, index, timeout_at)

    def on_signal(self, signal: str, payload: Any) -> None:
        self.record(ev.SIGNAL_RECEIVED, signal=signal, payload=payload)
        s = self.s
        if s.waiting == signal:
            node = self.wf.nodes[s.cursor]
            self.record(ev.STEP_COMPLETED, step=node.name, attempt=1, result=payload, signal=signal)
            self.after_completed(node.name, 1)

    # -- versions (decisions.md §6) ----------------------------------------------------------

    def hold(self, command: Input, problem: str | None, versions_here: list[str]) -> None:
        """No definition here: block (once per reason) and keep what `command` asked for."""
        s = self.s
        if isinstance(command, CancelExecution):
            self.record(ev.EXECUTION_CANCELLED, reason=command.reason)
            return
        if isinstance(command, FailExecution):
            self.fail(command.error_type, command.message)
            return
        if isinstance(command, SendSignal):
            _check_kept(s, command)
        if isinstance(command, ChildEnded):
            raise InvalidCommand(
                f"execution {s.id!r} is blocked (waiting for version {s.workflow_version!r}): "
                f"the end of its child {command.child!r} is taken once it resumes; replay "
                "this dead letter then",
                s.id,
            )
        if isinstance(command, CompleteStep):
            completions.check(s, command)
            raise InvalidCommand(
                f"execution {s.id!r} is blocked (waiting for version {s.workflow_version!r}): "
                f"its step {command.step!r} can be completed once it resumes; replay this "
                "dead letter then",
                s.id,
            )
        reason = problem or (
            f"execution recorded workflow {s.workflow!r} version {s.workflow_version!r}, which "
            "this worker lacks; it resumes on a worker that has it (keep the old definition "
            "registered beside the new one, or declare migrate_from on the new one)"
        )
        b = s.blocked
        if b is None or (b["reason"], b["versions_here"]) != (reason, versions_here):
            self.record(
                ev.EXECUTION_BLOCKED,
                waiting_for=s.workflow_version,
                versions_here=versions_here,
                reason=reason,
                status=s.status,
            )
        if isinstance(command, SendSignal):  # kept, taken by its wait once resumed
            self.record(ev.SIGNAL_RECEIVED, signal=command.signal, payload=command.payload)
        if isinstance(command, Permit):  # recorded: resuming goes on from it
            limits.on_grant(self, command, definition=False)
        # A timer stays pending and a step in flight stays scheduled in the state: both are
        # re-issued when the execution resumes. A stale step report changes nothing.

    def resume(self) -> None:
        """A blocked execution has its definition again: record it, re-issue what it was
        doing, and let its wait take a signal kept meanwhile."""
        s = self.s
        assert s.blocked is not None
        self.record(ev.EXECUTION_RESUMED, workflow_version=self.wf.version,
                    status=s.blocked["status"])  # fmt: skip
        self.on_recover(reason="resumed")
        s = self.s
        if s.cursor < 0 and s.status == RUNNING:  # held before it began (§6, §20)
            if s.limiter is not None or not limits.queue_start(self, self.wf):
                self.enter(0)  # admitted by its limiter while blocked, or no limit
            return
        signal = s.waiting
        if signal is not None and s.signals.get(signal) and s.cursor >= 0:
            node = self.wf.nodes[s.cursor]
            self.record(
                ev.STEP_COMPLETED, step=node.name, attempt=1, result=s.signals[signal][0],
                signal=signal,
            )  # fmt: skip
            self.after_completed(node.name, 1)

    def on_recover(self, reason: str = "owner changed") -> None:
        """The partition changed owner: run again the steps that were in flight (at least
        once), each recorded as a new attempt before it runs, and re-arm the timers."""
        s = self.s
        for name in [n for n in s.running if n not in s.awaiting]:  # awaiting: nothing ran
            self.record(
                ev.STEP_RESCHEDULED,
                step=name,
                attempt=s.attempts[name] + 1,
                reason=reason,
                redispatch=s.redispatches.get(name, 0) + 1,
            )
            self.effects.append(run_step_effect(self.s, self.wf, self.wf.steps[name]))
        for timer_id, timer in s.timers.items():
            self.effects.append(ArmTimer(s.id, timer_id, timer["fire_at"]))


def run_step_effect(state: Execution, wf: Workflow, step: Step) -> RunStep:
    """Run `step` as dispatched now: its attempt and token come from the state."""
    attempt = state.attempts[step.name]
    kwargs: dict[str, Any] = {}
    for p in step.params:
        if p == "inputs":
            kwargs[p] = state.inputs
        elif p == "ctx":
            kwargs[p] = StepContext(
                state.id, wf.name, wf.version, step.name, attempt, state.iteration,
                token=state.running[step.name],
            )  # fmt: skip
        else:
            kwargs[p] = state.results.get(p)
    isolated = state.redispatches.get(step.name, 0) >= ISOLATE_AFTER_REDISPATCHES
    return RunStep(
        state.id, step, attempt, state.running[step.name], kwargs, isolated, wf.name,
        state.traceparent,
    )  # fmt: skip
