"""kill -9 a worker while executions run: every execution still completes, each step result is
recorded once, and versions stay gapless."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from cerebelum.client import Client
from cerebelum.config import Settings
from tests.helpers import assert_gapless, assert_results_recorded_once, end_offsets, events_since

pytestmark = [pytest.mark.integration, pytest.mark.fault]

N = 300


async def test_kill_one_of_two_workers(
    settings: Settings, processes, client: Client, unique
) -> None:
    since = await end_offsets(settings)
    victim = processes.worker()
    processes.worker()
    ids = [unique(f"slow-{i}") for i in range(N)]
    await asyncio.gather(
        *[
            await client.start_nowait("slow", {"n": i, "pause": 1.0}, eid)
            for i, eid in enumerate(ids)
        ]
    )
    waits = [asyncio.ensure_future(client.wait(eid, timeout=120)) for eid in ids]
    # Each execution takes 3 s of steps: once the first completes, the rest are mid-flight.
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    victim.kill()
    victim.wait()
    assert len(pending) > N // 2, "the kill must land while most executions still run"

    results = await asyncio.gather(*waits)
    assert [r.status for r in results] == ["completed"] * N
    assert [r.output for r in results] == [{"c": (i + 1) * 10} for i in range(N)]

    history = await events_since(settings, since, set(ids))
    for eid in ids:
        events = history[eid]
        assert_gapless(events)
        assert_results_recorded_once(events)
        completed = Counter(e["step"] for e in events if e["type"] == "StepCompleted")
        assert completed == {"slow_a": 1, "slow_b": 1, "slow_c": 1}, eid
        assert sum(e["type"] == "ExecutionCompleted" for e in events) == 1
