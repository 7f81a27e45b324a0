"""A deterministic in-memory cluster for the pure core: several executions that talk to each
other through commands (SendCommand effects: child starts, cancels, a child's end told to its
parent), each decided in turn. No Kafka, no worker. For child workflows' tests and goldens."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from cerebelum.core.apply import fold
from cerebelum.core.commands import Input, StartExecution, TimerDue, parse_command
from cerebelum.core.events import Event
from cerebelum.core.machine import ArmTimer, RunStep, SendCommand, decide
from cerebelum.core.state import Execution
from cerebelum.core.workflow import Registry
from tests.sim import START, run_step


class Cluster:
    def __init__(self, registry: Registry, run: Callable[[RunStep], Any] = run_step) -> None:
        self.registry = registry
        self.run = run
        self.states: dict[str, Execution] = {}
        self.logs: dict[str, list[Event]] = {}
        self.inbox: deque[Input] = deque()
        self.timers: list[ArmTimer] = []
        self.sent: list[Any] = []  # every command sent between executions, in order
        self.now = START

    def start(self, execution_id: str, workflow: str, inputs: Any) -> None:
        self.inbox.append(StartExecution(execution_id, workflow, inputs))

    def send(self, command: Input) -> None:
        self.inbox.append(command)

    def run_until_quiet(self, fire_timers: bool = True, max_inputs: int = 10_000) -> None:
        for _ in range(max_inputs):
            if self.inbox:
                command = self.inbox.popleft()
            elif fire_timers and self.timers:
                self.timers.sort(key=lambda t: t.fire_at)
                timer = self.timers.pop(0)
                self.now = max(self.now, timer.fire_at)
                command = TimerDue(timer.execution_id, timer.timer_id)
            else:
                return
            self.now += 1
            self.decide(command)
        raise AssertionError("the cluster did not go quiet")

    def run_until(self, until_ms: int) -> None:
        """Run, firing timers in order up to `until_ms` (the clock follows them)."""
        while True:
            self.run_until_quiet(fire_timers=False)
            due = sorted((t for t in self.timers if t.fire_at <= until_ms), key=lambda t: t.fire_at)
            if not due:
                self.now = max(self.now, until_ms)
                return
            self.timers.remove(due[0])
            self.now = max(self.now, due[0].fire_at)
            self.decide(TimerDue(due[0].execution_id, due[0].timer_id))

    def decide(self, command: Input) -> None:
        eid = command.execution_id
        state, events, effects = decide(self.states.get(eid), command, self.now, self.registry)
        if state is None:
            return
        self.states[eid] = state
        self.logs.setdefault(eid, []).extend(events)
        assert fold(self.logs[eid]) == state
        for effect in effects:
            if isinstance(effect, RunStep):
                self.inbox.append(self.run(effect))
            elif isinstance(effect, ArmTimer):
                self.timers.append(effect)
            elif isinstance(effect, SendCommand):
                parsed = parse_command(effect.value)  # the wire format, as a worker reads it
                assert parsed.execution_id == effect.execution_id
                self.sent.append(parsed)
                self.inbox.append(parsed)
