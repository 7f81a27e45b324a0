"""The execution state machine: `decide` turns an input into events and effects.

    decide(state, input, now, registry) -> (state', events, effects)

`decide` changes state only through `apply` (cerebelum.core.apply), so folding the events it
returns from nothing always gives the state the live worker holds (invariant 5). Effects are
what the worker must do once the events are durable: run a step, arm a timer.

`decide` never changes the state it is given: it works on a copy, so an input it refuses
(InvalidCommand) or a bug that makes it raise half-way leaves the caller's state as it was.
"""

from __future__ import annotations

from typing import Any

from cerebelum.core import events as ev
from cerebelum.core import rules as r
from cerebelum.core.apply import apply, fold
from cerebelum.core.commands import (
    CancelExecution,
    FailExecution,
    Input,
    Recover,
    SendSignal,
    StartExecution,
    StepOutcome,
    TimerDue,
    payload_size,
)
from cerebelum.core.events import Event, error_info, make_event
from cerebelum.core.state import Execution
from cerebelum.core.workflow import (
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
MAX_HISTORY = 10_000

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


Effect = RunStep | ArmTimer
Decision = tuple[Execution | None, list[Event], list[Effect]]


def decide(state: Execution | None, command: Input, now: int, registry: Registry) -> Decision:
    """The events and effects that `command` causes for the execution in `state`.

    Raises InvalidCommand (the worker sends the command to the DLQ) for a start of an unknown
    workflow, a signal or cancel for an execution that does not exist or has ended, or a signal
    its workflow never waits for or that would be kept past MAX_KEPT_SIGNALS(_BYTES).
    """
    if isinstance(command, StartExecution):
        if state is not None:
            return state, [], []  # idempotent start: the execution exists already
        wf = registry.get(command.workflow)
        if wf is None:
            raise UnknownWorkflow(command.workflow, command.execution_id)
        d = _Decider(None, wf, now)
        # The caller's trace context only when it gave one: histories without it keep their shape.
        trace = {"traceparent": command.traceparent} if command.traceparent is not None else {}
        d.record(
            ev.EXECUTION_STARTED,
            workflow=wf.name,
            workflow_version=wf.version,
            inputs=command.inputs,
            execution_id=command.execution_id,
            **trace,
        )
        d.enter(0)
        return d.finish()
    if state is None:
        if isinstance(command, (SendSignal, CancelExecution)):
            raise InvalidCommand(f"no execution {command.execution_id!r}", command.execution_id)
        return None, [], []
    if state.terminal:
        if isinstance(command, (SendSignal, CancelExecution)):
            what = "signal" if isinstance(command, SendSignal) else "cancel"
            raise InvalidCommand(
                f"{what} for execution {command.execution_id!r}, which has ended ({state.status})",
                command.execution_id,
            )
        return state, [], []
    wf = registry.get(state.workflow, state.workflow_version)
    d = _Decider(state.copy(), wf, now)  # type: ignore[arg-type]
    if wf is None:
        versions = registry.versions(state.workflow)
        d.fail(
            "WorkflowVersionMismatch",
            f"execution recorded workflow {state.workflow!r} version {state.workflow_version!r}; "
            + (f"this worker has versions {versions}" if versions else "this worker lacks it")
            + ". Keep the old definition registered (Workflow(..., version=...)) beside the new "
            "one so executions started on it can finish.",
        )
        return d.finish()
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


class _Decider:
    """One decision: records events (folding each at once) and collects effects."""

    __slots__ = ("state", "wf", "now", "events", "effects")

    def __init__(self, state: Execution | None, wf: Workflow, now: int) -> None:
        self.state = state
        self.wf = wf
        self.now = now
        self.events: list[Event] = []
        self.effects: list[Effect] = []

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
        if s is not None and not s.terminal and s.version >= MAX_HISTORY:
            self.effects.clear()
            self.fail("HistoryLimitExceeded", f"history passed {MAX_HISTORY} events")
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
        self.record(ev.STEP_SCHEDULED, step=step.name, node=index, attempt=attempt)
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
        if out.ok:
            self.record(ev.STEP_COMPLETED, step=out.step, attempt=attempt, result=out.value)
            self.after_completed(out.step, attempt)
        else:
            error = out.error or error_info("Error", "step failed")
            # Optional, absent when empty: histories recorded before it read the same.
            extra = {"traceback": out.traceback} if out.traceback else {}
            self.record(ev.STEP_FAILED, step=out.step, attempt=attempt, error=error, **extra)
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

    def on_recover(self) -> None:
        """The partition changed owner: run again the steps that were in flight (at least
        once), each recorded as a new attempt before it runs, and re-arm the timers."""
        s = self.s
        for name in list(s.running):
            self.record(
                ev.STEP_RESCHEDULED,
                step=name,
                attempt=s.attempts[name] + 1,
                reason="owner changed",
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
                state.id, wf.name, wf.version, step.name, attempt, state.iteration
            )
        else:
            kwargs[p] = state.results.get(p)
    isolated = state.redispatches.get(step.name, 0) >= ISOLATE_AFTER_REDISPATCHES
    return RunStep(
        state.id, step, attempt, state.running[step.name], kwargs, isolated, wf.name,
        state.traceparent,
    )  # fmt: skip
