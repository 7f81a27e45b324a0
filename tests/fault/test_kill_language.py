"""kill -9 a worker while executions sleep, wait for approval, fan out and wait for a step to be
completed from outside: each still completes on the survivor, with every step result recorded
once and one timer firing per sleep."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cerebelum.client import Client
from cerebelum.config import Settings
from tests.helpers import assert_gapless, assert_results_recorded_once, end_offsets, events_since

pytestmark = [pytest.mark.integration, pytest.mark.fault]

EACH = 60


async def test_kill_during_sleep_approval_and_fan_out(
    settings: Settings, processes, client: Client, unique, tmp_path
) -> None:
    victim = processes.worker()
    processes.worker()
    # Both workers own partitions once a probe execution has gone through after both joined.
    await asyncio.sleep(3)
    assert (await client.run("w3", {"n": 0}, unique("probe"), timeout=60)).status == "completed"

    since = await end_offsets(settings)
    sleepers = [unique(f"nap-{i}") for i in range(EACH)]
    approvals = [unique(f"appr-{i}") for i in range(EACH)]
    fans = [unique(f"fan-{i}") for i in range(EACH)]
    handoffs = [unique(f"handoff-{i}") for i in range(EACH)]
    parents = [unique(f"parent-{i}") for i in range(EACH // 2)]
    acks = []
    for i, eid in enumerate(parents):  # two children each, mid-way when the kill comes
        acks.append(await client.start_nowait("parent_of_fans", {"ns": [i, i + 1]}, eid))
    for i in range(EACH):
        acks.append(await client.start_nowait("napper", {"n": i}, sleepers[i]))
        acks.append(await client.start_nowait("approver", {"amount": i}, approvals[i]))
        acks.append(await client.start_nowait("fanout", {"n": i, "pause": 2.0}, fans[i]))
        (tmp_path / handoffs[i]).mkdir()
        marker = {"marker": str(tmp_path / handoffs[i]), "timeout": 300}
        acks.append(await client.start_nowait("handoff", marker, handoffs[i]))
    await asyncio.gather(*acks)
    await asyncio.sleep(1.0)  # asleep, waiting, mid fan-out, and handed out for completion
    victim.kill()
    victim.wait()
    for eid in approvals:  # approvals arrive after the kill: the waits must have survived
        await client.signal(eid, "decision", {"approved": True, "by": "ops"})
    # Completions too: a pending step survives its worker (nothing re-runs it).

    async def complete(i: int, eid: str) -> Any:
        sent = None
        for _ in range(12):  # a run the kill caught before it was pending runs again: its token
            token = _newest_token(tmp_path / eid)
            if token is None:  # not handed out yet (its run waits for the take-over)
                await asyncio.sleep(1)
                continue
            if token != sent:
                await client.complete(token, {"signed_by": f"s{i}"})
                sent = token
            try:
                return await client.wait(eid, timeout=10)
            except TimeoutError:
                continue
        raise AssertionError(f"{eid} was never completed")

    results = await asyncio.gather(
        *(client.wait(e, timeout=120) for e in sleepers + approvals + fans + parents),
        *(complete(i, eid) for i, eid in enumerate(handoffs)),
    )
    assert [r.status for r in results] == ["completed"] * (4 * EACH + len(parents))
    by_id = {r.execution_id: r.output for r in results}
    assert all(by_id[sleepers[i]] == {"n": i, "woke": True} for i in range(EACH))
    assert all(by_id[approvals[i]] == {"amount": i, "by": "ops"} for i in range(EACH))
    assert all(by_id[fans[i]] == {"sum": 2 * i + 3} for i in range(EACH))
    assert all(by_id[handoffs[i]] == {"signed_by": f"s{i}"} for i in range(EACH))
    assert all(
        by_id[eid] == [{"sum": 2 * i + 3}, {"sum": 2 * (i + 1) + 3}]
        for i, eid in enumerate(parents)
    )
    kids = [f"{eid}.fans.{k}" for eid in parents for k in (0, 1)]
    history = await events_since(
        settings, since, set(sleepers + approvals + fans + handoffs + parents + kids)
    )
    for kid in kids:  # exactly one child per place, whatever the kill interrupted
        assert [e["type"] for e in history[kid]].count("ExecutionStarted") == 1, kid
        assert history[kid][-1]["type"] == "ExecutionCompleted", kid
    for eid in parents:
        ended = [e["index"] for e in history[eid] if e["type"] == "ChildCompleted"]
        assert sorted(ended) == [0, 1], eid
    for eid, events in history.items():
        assert_gapless(events)
        assert_results_recorded_once(events)
        completed = Counter(e["step"] for e in events if e["type"] == "StepCompleted")
        assert set(completed.values()) == {1}, (eid, completed)
    for eid in sleepers:
        assert [e["type"] for e in history[eid]].count("TimerFired") == 1
    for eid in handoffs:  # handed out once: the kill re-ran nothing that was pending
        assert [e["type"] for e in history[eid]].count("StepPending") == 1


def _newest_token(directory: Path) -> str | None:
    """The token of the step's latest run (a run the kill caught in flight ran again); None
    before its first run."""
    tokens = list(directory.glob("token-*"))
    if not tokens:
        return None
    return max(tokens, key=lambda p: int(p.name.split("-")[1])).read_text()


async def test_kill_9_the_worker_of_a_schedule_one_run_per_tick(
    settings: Settings, processes, client: Client, unique
) -> None:
    """A schedule ticking every second (catchup=all) while its worker is killed: the survivor
    takes it over and catches up; every tick from the first to the last ran exactly once."""
    victim = processes.worker()
    await asyncio.sleep(3)
    assert (await client.run("w3", {"n": 0}, unique("probe"), timeout=60)).status == "completed"
    name = unique("every-second")
    sid = f"schedule.{name}"
    since = await end_offsets(settings)
    spec = {"name": name, "workflow": "w3", "every_s": 1, "catchup": "all", "overlap": "allow",
            "inputs": {"n": 1}}  # fmt: skip
    await client.start("cerebelum.schedule", spec, sid)
    await asyncio.sleep(3)
    processes.worker()  # the survivor joins; then the owner of every partition dies
    await asyncio.sleep(1)
    victim.kill()
    victim.wait()
    await asyncio.sleep(10)  # taken over, caught up, ticking again
    await client.cancel(sid, "enough")
    await asyncio.sleep(2)
    events = (await events_since(settings, since, {sid}))[sid]
    assert_gapless(events)
    fired = [e for e in events if e["type"] == "ScheduleFired"]
    ticks = [e["tick"] for e in fired]
    assert len(ticks) >= 10
    assert ticks == list(range(ticks[0], ticks[-1] + 1, 1000))  # each tick once, none missing
    run_ids = [e["run"] for e in fired]
    results = await asyncio.gather(*(client.wait(r, timeout=60) for r in run_ids))
    assert {r.status for r in results} == {"completed"}
    history = await events_since(settings, since, set(run_ids))
    for run in run_ids:
        assert [e["type"] for e in history[run]].count("ExecutionStarted") == 1, run


async def test_kill_9_mid_way_holds_concurrency_and_rate_limits_exactly(
    settings: Settings, processes, client: Client, unique
) -> None:
    """Three customers with six executions each under one-per-customer, and seven calls under
    3 per second, while a worker is killed: every execution runs, none of a customer's two at
    once, each admitted once, every permit granted and given back once, the rate kept."""
    from cerebelum.core.limits import limiter_id
    from tests.integration.test_limits import overlaps

    victim = processes.worker()
    processes.worker()
    await asyncio.sleep(3)
    assert (await client.run("w3", {"n": 0}, unique("probe"), timeout=60)).status == "completed"

    since = await end_offsets(settings)
    customers = [unique(f"cust-{c}") for c in range(3)]
    held = {c: [unique(f"opc-{c}-{k}") for k in range(6)] for c in customers}
    key = unique("key")
    calls = [unique(f"call-{k}") for k in range(7)]
    acks = []
    for k in range(6):
        for c in customers:
            inputs = {"customer": c, "n": k, "pause": 0.4}
            acks.append(await client.start_nowait("one_per_customer", inputs, held[c][k]))
    for k, eid in enumerate(calls):
        acks.append(await client.start_nowait("rated_call", {"api_key": key, "n": k}, eid))
    await asyncio.gather(*acks)
    await asyncio.sleep(1.2)  # a few admitted, the rest queued, the rate window full
    victim.kill()
    victim.wait()

    everyone = [eid for ids in held.values() for eid in ids] + calls
    results = {r.execution_id: r for r in
               await asyncio.gather(*(client.wait(e, timeout=120) for e in everyone))}  # fmt: skip
    assert {r.status for r in results.values()} == {"completed"}
    for c, ids in held.items():
        spans = [(results[e].output["began"], results[e].output["ended"]) for e in ids]
        assert overlaps(spans) == [], f"two executions of {c} ran at once"

    limiters = {limiter_id("concurrency", "one_per_customer", c): ids for c, ids in held.items()}
    rate = limiter_id("rate", "call_partner", key)
    for _ in range(100):  # the last permits go back just after their holders end
        history = await events_since(settings, since, {*everyone, *limiters, rate})
        if all([e["type"] for e in history[lid]].count("PermitReleased") == 6 for lid in limiters):
            break
        await asyncio.sleep(0.2)
    for lid, ids in limiters.items():
        assert_gapless(history[lid])
        granted = [e["holder"] for e in history[lid] if e["type"] == "PermitGranted"]
        released = [e["holder"] for e in history[lid] if e["type"] == "PermitReleased"]
        assert sorted(granted) == sorted(ids) and sorted(released) == sorted(ids), lid
    for eid in everyone:
        assert_gapless(history[eid])
        assert_results_recorded_once(history[eid])
        types = [e["type"] for e in history[eid]]
        admitted = "ExecutionAdmitted" if eid not in calls else "StepAdmitted"
        assert types.count(admitted) == 1, (eid, types)
    grants = [e["at"] for e in history[rate] if e["type"] == "PermitGranted"]
    assert len(grants) == 7
    assert all(grants[k + 3] - grants[k] >= 1000 for k in range(len(grants) - 3)), grants
