"""Each feature of the workflow language on the real Kafka broker, through a real worker."""

from __future__ import annotations

import asyncio
import time

import pytest

from cerebelum.client import Client
from cerebelum.config import Settings
from tests.conftest import module_worker
from tests.helpers import assert_gapless, end_offsets, events_since, types

pytestmark = pytest.mark.integration


worker = module_worker("language")


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


async def test_a_step_silent_past_its_heartbeat_timeout_is_retried(
    settings: Settings, worker: None, client: Client, unique
) -> None:
    since = await end_offsets(settings)
    eid = unique("beat")
    result = await client.run("heartbeats", {}, eid, timeout=60)
    assert result.status == "completed" and result.output == {"attempt": 2}
    failed = [e for e in await history(settings, since, eid) if e["type"] == "StepFailed"]
    assert [e["error"]["type"] for e in failed] == ["StepHeartbeatTimeout"]
    assert "{'attempt': 1}" in failed[0]["error"]["message"]  # its last heartbeat's details


async def test_cancel_stops_the_running_steps(
    worker: None, client: Client, unique, tmp_path
) -> None:
    eid = unique("long")
    await client.start("long_runner", {"marker": str(tmp_path)}, eid)
    await _until(lambda: {"async-started", "plain-started"} <= _names(tmp_path), 30)
    await client.cancel(eid, "enough")
    result = await client.wait(eid, timeout=30)
    assert result.status == "cancelled"
    # The async step's task was cancelled; the plain step saw ctx.cancelled and returned.
    await _until(lambda: {"async-cancelled", "plain-saw-cancelled"} <= _names(tmp_path), 10)


def _names(directory) -> set[str]:
    return {p.name for p in directory.iterdir()}


async def _until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_step_completed_from_outside_exactly_once(
    settings: Settings, worker: None, client: Client, unique, tmp_path
) -> None:
    since = await end_offsets(settings)
    eid = unique("handoff")
    await client.start("handoff", {"marker": str(tmp_path)}, eid)
    await _until(lambda: "token-1" in _names(tmp_path), 30)
    token = (tmp_path / "token-1").read_text()
    # A failure first: the step's retry policy runs it again, which hands out a new token.
    await client.complete(token, error={"type": "Declined", "message": "try again"})
    await _until(lambda: "token-2" in _names(tmp_path), 30)
    second = (tmp_path / "token-2").read_text()
    assert second != token
    await client.complete(second, {"signed_by": "ana"})
    await client.complete(second, {"signed_by": "mallory"})  # refused: completed already
    await client.complete(token, {"signed_by": "eve"})  # refused: an earlier run's token
    result = await client.wait(eid, timeout=30)
    assert result.status == "completed" and result.output == {"signed_by": "ana"}
    events = await history(settings, since, eid)
    assert types(events).count("StepPending") == 2
    done = [e for e in events if e["type"] == "StepCompleted" and e["step"] == "hand_off"]
    assert [e["result"] for e in done] == [{"signed_by": "ana"}]
    failed = [e for e in events if e["type"] == "StepFailed"]
    assert [e["error"]["type"] for e in failed] == ["Declined"]


async def test_a_step_not_completed_in_time_fails(
    worker: None, client: Client, unique, tmp_path
) -> None:
    eid = unique("handoff-late")
    await client.start("handoff", {"marker": str(tmp_path), "timeout": 0.3}, eid)
    result = await client.wait(eid, timeout=30)
    assert result.status == "failed" and result.error["type"] == "StepTimeout"
    assert {"token-1", "token-2"} <= _names(tmp_path)  # timed out twice: retried once


async def test_children_run_as_their_own_executions_and_the_parent_gets_their_outputs(
    settings: Settings, worker: None, client: Client, unique
) -> None:
    since = await end_offsets(settings)
    eid = unique("billing")
    lines = [["c-1", 5], ["c-2", 7], ["c-3", 1]]
    result = await client.run("billing", {"lines": lines}, eid, timeout=60)
    assert result.status == "completed" and result.output == {"total": 26, "count": 3}
    kids = [f"{eid}.invoices.{k}" for k in range(3)]
    for k, kid in enumerate(kids):  # each child is an execution of its own, on its own partition
        done = await client.wait(kid, timeout=30)
        assert done.status == "completed" and done.output["customer"] == lines[k][0]
    history = await events_since(settings, since, {eid, *kids})
    parent = history[eid]
    assert_gapless(parent)
    assert [e["index"] for e in parent if e["type"] == "ChildCompleted"] != []
    assert sorted(e["index"] for e in parent if e["type"] == "ChildCompleted") == [0, 1, 2]
    for kid in kids:
        started = [e for e in history[kid] if e["type"] == "ExecutionStarted"]
        assert len(started) == 1 and started[0]["parent"]["execution_id"] == eid


async def test_a_childs_failure_is_the_nodes_failure(worker: None, client: Client, unique) -> None:
    result = await client.run("parent_of_flaky", {"succeed_on": 99}, unique("pof"), timeout=60)
    assert result.status == "failed" and result.error["type"] == "ChildFailed"
    missing = await client.run("parent_of_missing", {}, unique("pom"), timeout=60)
    assert missing.status == "failed" and missing.error["type"] == "ChildFailed"
    assert "unknown workflow" in missing.error["message"]


async def test_cancelling_the_parent_cancels_its_child(
    settings: Settings, worker: None, client: Client, unique
) -> None:
    since = await end_offsets(settings)
    eid = unique("guarded")
    await client.start("guarded", {"amount": 3}, eid)
    kid = f"{eid}.approval"

    async def child_waits() -> bool:
        events = (await events_since(settings, since, {kid})).get(kid, [])
        return any(e["type"] in ("SignalAwaited", "ApprovalRequested") for e in events)

    deadline = time.monotonic() + 30
    while not await child_waits():
        assert time.monotonic() < deadline, "the child never waited"
        await asyncio.sleep(0.2)
    await client.cancel(eid, "not needed")
    assert (await client.wait(eid, timeout=30)).status == "cancelled"
    child_result = await client.wait(kid, timeout=30)
    assert child_result.status == "cancelled" and eid in child_result.error["message"]
