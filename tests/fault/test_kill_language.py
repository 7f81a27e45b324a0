"""kill -9 a worker while executions sleep, wait for approval and fan out: each still completes
on the survivor, with every step result recorded once and one timer firing per sleep."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from cerebelum.client import Client
from cerebelum.config import Settings
from tests.helpers import assert_gapless, assert_results_recorded_once, end_offsets, events_since

pytestmark = [pytest.mark.integration, pytest.mark.fault]

EACH = 60


async def test_kill_during_sleep_approval_and_fan_out(
    settings: Settings, processes, client: Client, unique
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
    acks = []
    for i in range(EACH):
        acks.append(await client.start_nowait("napper", {"n": i}, sleepers[i]))
        acks.append(await client.start_nowait("approver", {"amount": i}, approvals[i]))
        acks.append(await client.start_nowait("fanout", {"n": i, "pause": 2.0}, fans[i]))
    await asyncio.gather(*acks)
    await asyncio.sleep(1.0)  # asleep, waiting, and mid fan-out
    victim.kill()
    victim.wait()
    for eid in approvals:  # approvals arrive after the kill: the waits must have survived
        await client.signal(eid, "decision", {"approved": True, "by": "ops"})

    results = await asyncio.gather(
        *(client.wait(e, timeout=120) for e in sleepers + approvals + fans)
    )
    assert [r.status for r in results] == ["completed"] * (3 * EACH)
    by_id = {r.execution_id: r.output for r in results}
    assert all(by_id[sleepers[i]] == {"n": i, "woke": True} for i in range(EACH))
    assert all(by_id[approvals[i]] == {"amount": i, "by": "ops"} for i in range(EACH))
    assert all(by_id[fans[i]] == {"sum": 2 * i + 3} for i in range(EACH))

    history = await events_since(settings, since, set(sleepers + approvals + fans))
    for eid, events in history.items():
        assert_gapless(events)
        assert_results_recorded_once(events)
        completed = Counter(e["step"] for e in events if e["type"] == "StepCompleted")
        assert set(completed.values()) == {1}, (eid, completed)
    for eid in sleepers:
        assert [e["type"] for e in history[eid]].count("TimerFired") == 1
