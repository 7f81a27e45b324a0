"""Durable schedules (decisions.md §19): a schedule is an execution of the built-in workflow
`cerebelum.schedule`, id `schedule.<name>`, whose inputs are its spec; its status is running
while active, waiting while paused; its live runs and counters sit in its results. Pure.

Each tick is a durable timer. When it fires, the schedule starts one execution per tick it runs,
with an id derived from the schedule and the tick (`<name>.<tick, ISO 8601 UTC>`), produced in
the same transaction as the event that records it: exactly one execution per tick whatever
fails (a tick decided again starts the same id, which is an idempotent start). The runs are the
schedule's children, so it hears when each ends (for the overlap policy).

    catchup   what a late timer (after an outage) runs of the ticks it missed:
              "skip" (default) the latest only if it is at most GRACE_MS late, "one" the
              latest, "all" every one (at most MAX_CATCHUP; the rest are skipped, counted)
    overlap   a tick while an earlier run is still live: "skip" (default) it, "allow" it,
              "cancel" the earlier runs first

Pause, resume and trigger-now are signals (`pause`, `resume`, `trigger`); deleting is
cancelling the schedule's execution (its runs carry on).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cerebelum.core import events as ev
from cerebelum.core.commands import (
    CancelExecution,
    ChildEnded,
    Input,
    Recover,
    SendSignal,
    TimerDue,
    cancel_command,
    start_command,
)
from cerebelum.core.cron import Cron, CronError
from cerebelum.core.ids import MAX_ID_LENGTH, id_problem
from cerebelum.core.state import WAITING, Execution
from cerebelum.errors import InvalidCommand

SCHEDULE_WORKFLOW = "cerebelum.schedule"
SCHEDULE_VERSION = "1"
ID_PREFIX = "schedule."
CATCHUP = ("skip", "one", "all")
OVERLAP = ("skip", "allow", "cancel")
SIGNALS = ("pause", "resume", "trigger")
GRACE_MS = 60_000
MAX_CATCHUP = 100
MIN_EVERY_S = 1.0


def schedule_id(name: str) -> str:
    return ID_PREFIX + name


def parse_spec(body: Any) -> dict[str, Any]:
    """A schedule's spec, checked and normalised; ValueError naming what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("a schedule is a JSON object")
    unknown = set(body) - {"name", "workflow", "inputs", "cron", "timezone", "every_s",
                           "catchup", "overlap", "start_at_ms"}  # fmt: skip
    if unknown:
        raise ValueError(f"unknown schedule fields: {', '.join(sorted(unknown))}")
    for field in ("name", "workflow"):
        if (problem := id_problem(body.get(field), f"the schedule's {field}")) is not None:
            raise ValueError(problem)
    if len(ID_PREFIX + body["name"]) > MAX_ID_LENGTH - 30:
        raise ValueError("a schedule's name is at most 150 characters")
    spec: dict[str, Any] = {"name": body["name"], "workflow": body["workflow"],
                            "inputs": body.get("inputs") or {}}  # fmt: skip
    if ("cron" in body) == ("every_s" in body):
        raise ValueError("a schedule has either 'cron' (with 'timezone') or 'every_s'")
    if "cron" in body:
        if not isinstance(body["cron"], str):
            raise ValueError("'cron' is a cron expression, e.g. '0 9 * * mon-fri'")
        zone = body.get("timezone", "UTC")
        if not isinstance(zone, str):
            raise ValueError("'timezone' is an IANA name, e.g. Europe/Madrid")
        try:
            Cron(body["cron"], zone)
        except CronError as exc:
            raise ValueError(str(exc)) from None
        spec.update(cron=body["cron"], timezone=zone)
    else:
        every = body["every_s"]
        if isinstance(every, bool) or not isinstance(every, (int, float)) or every < MIN_EVERY_S:
            raise ValueError(f"'every_s' is a number of seconds, at least {MIN_EVERY_S:g}")
        spec["every_s"] = every
    for field, allowed in (("catchup", CATCHUP), ("overlap", OVERLAP)):
        value = body.get(field, allowed[0])
        if value not in allowed:
            raise ValueError(f"'{field}' is one of {', '.join(allowed)}, not {value!r}")
        spec[field] = value
    return spec


def next_tick(spec: dict[str, Any], after_ms: int) -> int | None:
    """The first tick strictly after `after_ms`. An interval's ticks are its multiples since
    the epoch (every 60 s: on the minute), so its run ids are round and predictable."""
    if "cron" in spec:
        return Cron(spec["cron"], spec.get("timezone", "UTC")).next_after(after_ms)
    every = int(spec["every_s"] * 1000)
    return (after_ms // every + 1) * every


def next_ticks(spec: dict[str, Any], after_ms: int, n: int) -> list[int]:
    out: list[int] = []
    t: int | None = after_ms
    while len(out) < n and t is not None:
        t = next_tick(spec, t)
        if t is not None:
            out.append(t)
    return out


def run_id(name: str, tick_ms: int) -> str:
    """The execution a tick starts: `<name>.<tick as 2026-12-02T07:00:00Z>`."""
    iso = datetime.fromtimestamp(tick_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    millis = tick_ms % 1000
    return f"{name}.{iso}" if not millis else f"{name}.{iso[:-1]}.{millis:03d}Z"


def decide_schedule(d: Any, command: Input) -> None:
    """Decide `command` for a schedule's execution with `d` (machine._Decider, no workflow)."""
    s: Execution = d.s
    if isinstance(command, TimerDue):
        timer = s.timers.get(command.timer_id)
        if timer is None:
            return
        d.record(ev.TIMER_FIRED, timer_id=command.timer_id)
        _on_tick(d, timer["fire_at"])
    elif isinstance(command, SendSignal):
        _on_signal(d, command)
    elif isinstance(command, ChildEnded):
        if command.child in s.results.get("live", []):
            d.record(ev.SCHEDULE_RUN_ENDED, run=command.child, status=command.status)
    elif isinstance(command, CancelExecution):
        d.record(ev.EXECUTION_CANCELLED, reason=command.reason)
    elif isinstance(command, Recover):
        for timer_id, timer in s.timers.items():
            d.arm(timer_id, timer["fire_at"])


def start_schedule(d: Any) -> None:
    """Just started: arm the first tick."""
    _arm_next(d, d.now)


def _on_signal(d: Any, command: SendSignal) -> None:
    s: Execution = d.s
    if command.signal not in SIGNALS:
        raise InvalidCommand(
            f"a schedule takes the signals {', '.join(SIGNALS)}, not {command.signal!r}",
            command.execution_id,
        )
    if command.signal == "pause":
        if s.status != WAITING:
            d.record(ev.SCHEDULE_PAUSED)
    elif command.signal == "resume":
        if s.status == WAITING:
            d.record(ev.SCHEDULE_RESUMED)
            _arm_next(d, d.now)
    else:  # trigger: one run now, under the overlap policy
        _fire(d, d.now, manual=True)


def _on_tick(d: Any, tick: int) -> None:
    s: Execution = d.s
    spec = s.inputs
    if s.status == WAITING:
        return  # paused meanwhile (its timer was dropped; a late delivery changes nothing)
    due = [tick]
    while len(due) <= MAX_CATCHUP:
        t = next_tick(spec, due[-1])
        if t is None or t > d.now:
            break
        due.append(t)
    policy = spec.get("catchup", "skip")
    run: list[int]
    if policy == "all":
        run = due[:MAX_CATCHUP]
    elif policy == "one":
        run = due[-1:]
    else:
        run = due[-1:] if d.now - due[-1] <= GRACE_MS else []
    skipped = len(due) - len(run)
    if skipped:
        d.record(ev.SCHEDULE_SKIPPED, ticks=skipped, reason=f"missed ticks (catchup={policy})",
                 last=due[-1])  # fmt: skip
    # The overlap policy weighs the runs live before this timer, not the ticks it catches up
    # on together (catchup=all runs each of those).
    if run and _overlap_allows(d, run[-1], len(run)):
        for t in run:
            _start_run(d, t, manual=False)
    _arm_next(d, max(due[-1], d.now))


def _fire(d: Any, tick: int, manual: bool = False) -> None:
    if _overlap_allows(d, tick):
        _start_run(d, tick, manual)


def _overlap_allows(d: Any, tick: int, ticks: int = 1) -> bool:
    """Apply the overlap policy to the runs still live: skip this tick (False), or let it
    start (True), after cancelling them if the policy says so."""
    s: Execution = d.s
    spec = s.inputs
    live = list(s.results.get("live", []))
    overlap = spec.get("overlap", "skip")
    if live and overlap == "skip":
        d.record(ev.SCHEDULE_SKIPPED, ticks=ticks, reason=f"overlap: {live[-1]} still running",
                 last=tick)  # fmt: skip
        return False
    if live and overlap == "cancel":
        for previous in live:
            reason = f"schedule {spec['name']!r}: a new run starts (overlap=cancel)"
            d.effects.append(d.send(previous, cancel_command(previous, reason)))
    return True


def _start_run(d: Any, tick: int, manual: bool) -> None:
    s: Execution = d.s
    spec = s.inputs
    index = s.results.get("runs", 0)
    rid = run_id(spec["name"], tick) if not manual else f"{spec['name']}.manual-{s.version + 1}"
    parent = {"execution_id": s.id, "step": "run", "index": index}
    value = start_command(rid, spec["workflow"], spec.get("inputs", {}), None, parent)
    d.record(ev.SCHEDULE_FIRED, tick=tick, run=rid, manual=manual)
    d.effects.append(d.send(rid, value))


def _arm_next(d: Any, after: int) -> None:
    s: Execution = d.s
    t = next_tick(s.inputs, after)
    if t is None:
        return  # a cron expression that never ticks again
    timer_id = f"tick:{t}"
    if timer_id in s.timers:
        return
    d.record(ev.TIMER_STARTED, timer_id=timer_id, fire_at=t, step="tick", node=0, purpose="tick")
    d.arm(timer_id, t)
