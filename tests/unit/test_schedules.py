"""Schedules in the pure core (decisions.md §19), and their cron expressions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cerebelum.core.commands import CancelExecution, SendSignal, StartExecution, TimerDue
from cerebelum.core.cron import Cron, CronError
from cerebelum.core.machine import ArmTimer, decide
from cerebelum.core.schedules import next_tick, next_ticks, parse_spec, run_id, schedule_id
from cerebelum.core.workflow import Registry, Workflow, approval, step
from cerebelum.errors import InvalidCommand
from tests.cluster_sim import Cluster


@step
def job(inputs: dict) -> dict:
    return {"ran": True}


JOB = Workflow("job", [job])
SLOW = Workflow("slow_job", [approval("done")])
REG = Registry([JOB, SLOW])
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def create(c: Cluster, name: str = "nightly", **spec: Any) -> str:
    body = {"name": name, "workflow": "job", "every_s": 60, **spec}
    c.inbox.append(StartExecution(schedule_id(name), "cerebelum.schedule", body))
    return schedule_id(name)


def runs(c: Cluster) -> list[str]:
    return sorted(eid for eid in c.states if not eid.startswith("schedule."))


def test_one_execution_per_tick_with_an_id_from_the_tick() -> None:
    c = Cluster(REG)
    c.now = T0
    sid = create(c)
    c.run_until(T0 + 3 * 60_000 + 5)
    assert runs(c) == [run_id("nightly", T0 + k * 60_000) for k in (1, 2, 3)]
    assert runs(c)[0] == "nightly.2026-01-01T00:01:00Z"
    assert all(c.states[r].status == "completed" for r in runs(c))
    assert c.states[sid].results["live"] == []  # each run's end reached the schedule
    assert c.states[sid].results["runs"] == 3


def test_a_tick_decided_again_starts_the_same_execution() -> None:
    c = Cluster(REG)
    c.now = T0
    sid = create(c)
    c.run_until_quiet(fire_timers=False)
    (timer,) = c.timers
    state = c.states[sid]
    first = decide(state, TimerDue(sid, timer.timer_id), timer.fire_at, REG)
    again = decide(state, TimerDue(sid, timer.timer_id), timer.fire_at + 5_000, REG)
    assert first[1][1]["run"] == again[1][1]["run"]  # ScheduleFired: the same run id


@pytest.mark.parametrize(("catchup", "started"), [("skip", 0), ("one", 1), ("all", 6)])
def test_catch_up_after_an_outage(catchup: str, started: int) -> None:
    """Every 5 minutes; the first tick's timer fires 26.5 minutes late (at 00:31:30), so six
    ticks are due (00:05 ... 00:30), the latest 90 s late: more than the grace of 60 s."""
    c = Cluster(REG)
    c.now = T0
    sid = create(c, every_s=300, catchup=catchup)
    c.run_until_quiet(fire_timers=False)
    (timer,) = c.timers
    assert timer.fire_at == T0 + 300_000
    c.timers.clear()
    c.now = T0 + 31 * 60_000 + 30_000
    c.decide(TimerDue(sid, timer.timer_id))
    c.run_until_quiet(fire_timers=False)
    assert len(runs(c)) == started
    assert c.states[sid].results.get("skipped", 0) == 6 - started
    if catchup == "one":
        assert runs(c) == ["nightly.2026-01-01T00:30:00Z"]  # the latest
    (next_timer,) = c.timers
    assert next_timer.fire_at == T0 + 35 * 60_000  # carries on from now


def test_overlap_skip_allow_cancel() -> None:
    for overlap, expected in (("skip", ["waiting"]), ("allow", ["waiting", "waiting"]),
                              ("cancel", ["cancelled", "waiting"])):  # fmt: skip
        c = Cluster(REG)
        c.now = T0
        create(c, workflow="slow_job", overlap=overlap)
        c.run_until(T0 + 2 * 60_000 + 5)
        assert [c.states[r].status for r in runs(c)] == expected, overlap


def test_pause_resume_trigger_and_delete() -> None:
    c = Cluster(REG)
    c.now = T0
    sid = create(c)
    c.run_until(T0 + 60_000 + 5)
    c.send(SendSignal(sid, "pause", None))
    c.run_until(T0 + 5 * 60_000)
    assert len(runs(c)) == 1 and c.states[sid].status == "waiting" and not c.timers
    c.send(SendSignal(sid, "trigger", None))  # a run now, paused or not
    c.run_until_quiet(fire_timers=False)
    assert len(runs(c)) == 2 and any(".manual-" in r for r in runs(c))
    c.send(SendSignal(sid, "resume", None))
    c.run_until(T0 + 6 * 60_000 + 5)
    assert len(runs(c)) == 3 and c.states[sid].status == "running"
    c.send(CancelExecution(sid, "not needed"))  # delete
    c.run_until(T0 + 10 * 60_000)
    assert len(runs(c)) == 3 and c.states[sid].status == "cancelled"
    with pytest.raises(InvalidCommand, match="has ended"):
        decide(c.states[sid], SendSignal(sid, "pause", None), c.now, REG)


def test_a_schedule_refuses_other_signals_and_bad_specs() -> None:
    c = Cluster(REG)
    c.now = T0
    sid = create(c)
    c.run_until_quiet(fire_timers=False)
    with pytest.raises(InvalidCommand, match="takes the signals"):
        decide(c.states[sid], SendSignal(sid, "hello", None), T0, REG)
    with pytest.raises(InvalidCommand, match="schedule's execution id"):
        body = {"name": "n", "workflow": "job", "every_s": 5}
        decide(None, StartExecution("elsewhere", "cerebelum.schedule", body), T0, REG)
    for body, problem in [
        ({"name": "n", "workflow": "job"}, "either 'cron'"),
        ({"name": "n", "workflow": "job", "every_s": 0.5}, "at least 1"),
        ({"name": "n", "workflow": "job", "cron": "* * *"}, "3 fields"),
        ({"name": "n", "workflow": "job", "cron": "0 9 * * *", "timezone": "Nowhere"}, "time zone"),
        ({"name": "n", "workflow": "job", "every_s": 5, "overlap": "maybe"}, "overlap"),
        ({"name": "n n", "workflow": "job", "every_s": 5}, "name"),
        ({"name": "n", "workflow": "job", "every_s": 5, "extra": 1}, "unknown schedule fields"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_spec(body)


def test_a_cron_schedule_in_a_time_zone() -> None:
    spec = parse_spec({"name": "n", "workflow": "job", "cron": "0 9 * * mon-fri",
                       "timezone": "Europe/Madrid"})  # fmt: skip
    ticks = next_ticks(spec, ms("2026-12-04T10:00:00+00:00"), 3)
    assert [datetime.fromtimestamp(t / 1000, UTC).isoformat()[:16] for t in ticks] == [
        "2026-12-07T08:00", "2026-12-08T08:00", "2026-12-09T08:00"]  # fmt: skip
    assert next_tick({"every_s": 60}, T0 + 1) == T0 + 60_000


def test_cron_through_daylight_saving_changes() -> None:
    madrid = Cron("30 2 * * *", "Europe/Madrid")
    # 29 March 2026: 02:00 -> 03:00, so 02:30 does not exist that day.
    t1 = madrid.next_after(ms("2026-03-28T12:00:00+00:00"))
    assert t1 is not None
    t2 = madrid.next_after(t1)
    assert t2 is not None
    days = [datetime.fromtimestamp(t / 1000, madrid.zone).date().isoformat() for t in (t1, t2)]
    assert days == ["2026-03-30", "2026-03-31"]  # the 29th is skipped, not moved
    # 25 October 2026: 03:00 -> 02:00, so 02:30 happens twice; it ticks once.
    t = madrid.next_after(ms("2026-10-24T12:00:00+00:00"))
    assert t is not None
    assert madrid.next_after(t) == t + 25 * 3600_000  # type: ignore[operator]


@settings(max_examples=200, deadline=None)
@given(
    minute=st.sampled_from(["*", "0", "*/15", "5,35", "10-20/5"]),
    hour=st.sampled_from(["*", "9", "0-6", "*/6"]),
    dom=st.sampled_from(["*", "1", "15", "28-31"]),
    month=st.sampled_from(["*", "jan", "3-5", "*/2"]),
    dow=st.sampled_from(["*", "mon-fri", "0", "sat,sun"]),
    zone=st.sampled_from(["UTC", "Europe/Madrid", "America/New_York", "Asia/Kolkata"]),
    start=st.integers(ms("2026-01-01T00:00:00+00:00"), ms("2028-12-31T00:00:00+00:00")),
)
def test_cron_ticks_match_their_fields_and_increase(
    minute: str, hour: str, dom: str, month: str, dow: str, zone: str, start: int
) -> None:
    cron = Cron(f"{minute} {hour} {dom} {month} {dow}", zone)
    t = start
    for _ in range(3):
        nxt = cron.next_after(t)
        if nxt is None:
            return
        assert nxt > t and nxt % 60_000 == 0
        local = datetime.fromtimestamp(nxt / 1000, cron.zone)
        assert local.minute in cron.minutes and local.hour in cron.hours
        assert local.month in cron.months
        t = nxt


def test_bad_cron_expressions_say_what_is_wrong() -> None:
    for expr, problem in [("61 * * * *", "outside 0-59"), ("* * * foo *", "not a number"),
                          ("*/0 * * * *", "bad step"), ("5-1 * * * *", "backwards")]:  # fmt: skip
        with pytest.raises(CronError, match=problem):
            Cron(expr)
    assert Cron("@daily").minutes == {0} and Cron("@daily").hours == {0}
    assert isinstance(ArmTimer, type)


def test_a_schedule_outlives_the_history_limit() -> None:
    """A schedule ticks for good: four events a tick would fail a per-minute one within two
    days under the 10,000-event limit that guards user workflows; schedules are exempt."""
    from cerebelum.core.commands import TimerDue
    from cerebelum.core.machine import MAX_HISTORY, decide

    c = Cluster(REG)
    c.now = T0
    sid = create(c)
    c.run_until(T0 + 60_000 + 5)
    state = c.states[sid].copy()
    state.version = MAX_HISTORY + 100
    (timer_id,) = state.timers
    s, events, _ = decide(state, TimerDue(sid, timer_id), T0 + 2 * 60_000, REG)
    assert s is not None and s.status == "running"
    assert "ExecutionFailed" not in [e["type"] for e in events]
