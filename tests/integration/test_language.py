"""Each feature of the workflow language on the real Kafka broker, through a real worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from cerebelum.client import Client
from cerebelum.config import Settings
from tests.conftest import Processes
from tests.helpers import assert_gapless, end_offsets, events_since, types

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(settings: Settings, topics: None) -> Iterator[None]:
    procs = Processes(settings, "language")
    procs.worker()
    yield
    procs.stop_all()


async def history(settings: Settings, since: dict, eid: str) -> list[dict]:
    events = (await events_since(settings, since, {eid}))[eid]
    assert_gapless(events)
    return events


async def test_parallel_fan_out_and_in(worker: None, client: Client, unique) -> None:
    result = await client.run("fanout", {"n": 1}, unique("fanout"), timeout=60)
    assert result.status == "completed" and result.output == {"sum": 2 + 3}


async def test_retry_with_backoff(settings: Settings, worker: None, client: Client, unique) -> None:
    since = await end_offsets(settings)
    eid = unique("retrier")
    result = await client.run("retrier", {"succeed_on": 3}, eid, timeout=60)
    assert result.status == "completed" and result.output == {"attempt": 3}
    events = await history(settings, since, eid)
    retries = [e for e in events if e["type"] == "StepRetryScheduled"]
    assert [e["delay_ms"] for e in retries] == [200, 400]  # 0.2 s, then doubled
    assert types(events).count("TimerFired") == 2


async def test_retries_exhausted_fail(worker: None, client: Client, unique) -> None:
    result = await client.run("retrier", {"succeed_on": 99}, unique("retrier-fail"), timeout=60)
    assert result.status == "failed" and result.error["type"] == "Flaky"


async def test_step_timeout(worker: None, client: Client, unique) -> None:
    result = await client.run("timeouts", {}, unique("timeout"), timeout=60)
    assert result.status == "failed" and result.error["type"] == "StepTimeout"


async def test_durable_sleep(worker: None, client: Client, unique) -> None:
    started = time.monotonic()
    result = await client.run("napper", {"n": 4}, unique("nap"), timeout=60)
    assert result.status == "completed" and result.output == {"n": 4, "woke": True}
    assert time.monotonic() - started >= 3.0


async def test_approval_and_early_signal(
    settings: Settings, worker: None, client: Client, unique
) -> None:
    since = await end_offsets(settings)
    eid = unique("approve")
    await client.start("approver", {"amount": 5000}, eid)
    # Sent at once: usually before the execution reaches the wait. Either way it is kept.
    await client.signal(eid, "decision", {"approved": True, "by": "ana"})
    result = await client.wait(eid, timeout=60)
    assert result.status == "completed" and result.output == {"amount": 5000, "by": "ana"}
    assert "SignalReceived" in types(await history(settings, since, eid))


async def test_rejection_fails(worker: None, client: Client, unique) -> None:
    eid = unique("reject")
    await client.start("approver", {"amount": 1}, eid)
    await asyncio.sleep(0.5)
    await client.signal(eid, "decision", {"approved": False, "by": "bo"})
    result = await client.wait(eid, timeout=60)
    assert result.status == "failed" and result.error["message"] == "rejected"


async def test_signal_wait_times_out(worker: None, client: Client, unique) -> None:
    result = await client.run("waiter", {}, unique("waiter"), timeout=60)
    assert result.status == "failed" and result.error["type"] == "SignalTimeout"


async def test_cancel_drops_the_timer_and_runs_no_further_step(
    settings: Settings, worker: None, client: Client, unique
) -> None:
    since = await end_offsets(settings)
    eid = unique("cancel")
    await client.start("napper", {"n": 1}, eid)
    await asyncio.sleep(1.0)  # asleep by now
    await client.cancel(eid, "customer changed their mind")
    result = await client.wait(eid, timeout=60)
    assert result.status == "cancelled"
    assert result.error == {"type": "Cancelled", "message": "customer changed their mind"}
    await asyncio.sleep(3.0)  # past the nap: the dropped timer must not run nap_end
    events = await history(settings, since, eid)
    assert events[-1]["type"] == "ExecutionCancelled"
    assert events[-1]["reason"] == "customer changed their mind"
    assert not [e for e in events if e.get("step") == "nap_end"]


async def test_idempotent_start(settings: Settings, worker: None, client: Client, unique) -> None:
    since = await end_offsets(settings)
    eid = unique("twice")
    await client.start("w3", {"n": 1}, eid)
    await client.start("w3", {"n": 100}, eid)
    result = await client.wait(eid, timeout=60)
    assert result.output == {"n": 4}
    await asyncio.sleep(1)
    assert types(await history(settings, since, eid)).count("ExecutionStarted") == 1


async def test_loops_and_the_iteration_guard(worker: None, client: Client, unique) -> None:
    result = await client.run("looper", {}, unique("loop"), timeout=60)
    assert result.status == "completed" and result.output == {"i": 3}
    result = await client.run("runaway", {}, unique("runaway"), timeout=60)
    assert result.status == "failed" and result.error["type"] == "IterationLimitExceeded"


async def test_polling_example(worker: None, client: Client, unique) -> None:
    result = await client.run(
        "poll_job", {"job": "j", "ready_after": 3}, unique("poll"), timeout=60
    )
    assert result.status == "completed" and result.output == {
        "job": "j",
        "status": "done",
        "polls": 3,
    }


async def test_result_size_limit(worker: None, client: Client, unique) -> None:
    result = await client.run("big", {"size": 300_000}, unique("big"), timeout=60)
    assert result.status == "failed" and result.error["type"] == "LimitExceeded"


async def test_order_example_paths(worker: None, client: Client, unique) -> None:
    items = [{"sku": "tea", "qty": 2, "price": 4.5}]
    result = await client.run(
        "order", {"order_id": "o", "items": items, "provider_down_attempts": 2}, unique("o1")
    )
    assert result.status == "completed" and result.output["approved_by"] == "auto"
    eid = unique("o2")
    await client.start("order", {"order_id": "o2", "items": [{"qty": 1, "price": 5000}]}, eid)
    await client.signal(eid, "approval", {"approved": True, "by": "cfo"})
    result = await client.wait(eid, timeout=60)
    assert result.status == "completed" and result.output["approved_by"] == "cfo"


async def test_state_size_limit_fails_the_execution_not_the_partition(
    worker: None, client: Client, unique
) -> None:
    from cerebelum.client import partition_for

    eid = unique("hoarder")
    result = await client.run("hoarder", {}, eid, timeout=60)
    assert result.status == "failed" and result.error["type"] == "LimitExceeded"
    # The same partition keeps working.
    neighbour = next(
        c
        for c in (unique(f"n{i}") for i in range(10_000))
        if partition_for(c) == partition_for(eid)
    )
    assert (await client.run("w3", {"n": 1}, neighbour, timeout=60)).status == "completed"
