"""Taking over a partition from a worker that did not hand it over.

1. Re-runs are visible: a step in flight when its worker is killed runs again on the new owner,
   recorded first as StepRescheduled ("owner changed", the next attempt), so the attempts in
   the history match the runs.
2. A zombie paused between its transaction's offset commit and its commit (the fault hook
   CEREBELUM_FAULT_PAUSE_BEFORE_COMMIT stops it exactly there): its partitions move, the new
   owner must not restore around its open transaction, and that transaction must never become
   visible after the new owner restored. Here the new owner fences it (its transactional id is
   on the partition's snapshots) and the zombie's commit fails when it wakes. Without KIP-447
   (offsets committed without the group's generation, a committed-offset fetch that does not
   wait for pending ones) and without that fencing, the zombie's commit would land after the
   new owner restored, and the histories would hold two writers' versions.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from cerebelum.client import Client, partition_for
from cerebelum.config import Settings
from tests.conftest import LOGS, Processes
from tests.helpers import assert_gapless, assert_results_recorded_once, end_offsets, events_since

pytestmark = [pytest.mark.integration, pytest.mark.fault]


def log_of(processes: Processes, index: int) -> Path:
    return LOGS / f"{processes.name}-{index}-worker.log"


def owned(log: Path) -> set[int]:
    from cerebelum.worker.ranges import parse_ranges

    lines = [line for line in log.read_text().splitlines() if "owning partitions" in line]
    return set(parse_ranges(lines[-1].split("owning partitions ")[1])) if lines else set()


async def wait_until(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        await asyncio.sleep(0.1)


async def test_reruns_after_a_kill_are_recorded_as_attempts(
    settings: Settings, processes: Processes, client: Client, unique
) -> None:
    victim = processes.worker()
    processes.worker()
    await wait_until(
        lambda: len(owned(log_of(processes, 0)) | owned(log_of(processes, 1))) == 64
        and not owned(log_of(processes, 0)) & owned(log_of(processes, 1)),
        60,
        "two workers sharing the 64 partitions",
    )
    on_victim = owned(log_of(processes, 0))
    since = await end_offsets(settings)
    ids = [unique(f"rerun-{i}") for i in range(60)]
    acks = [await client.start_nowait("slow", {"n": i, "pause": 2.0}, e) for i, e in enumerate(ids)]
    await asyncio.gather(*acks)
    await asyncio.sleep(1.0)  # slow_a (2 s) in flight everywhere
    victim.kill()
    victim.wait()
    results = await asyncio.gather(*(client.wait(e, timeout=120) for e in ids))
    assert {r.status for r in results} == {"completed"}

    history = await events_since(settings, since, set(ids))
    rerun = 0
    for eid, events in history.items():
        assert_gapless(events)
        assert_results_recorded_once(events)
        dispatches = Counter(
            e["step"] for e in events if e["type"] in ("StepScheduled", "StepRescheduled")
        )
        for done in (e for e in events if e["type"] == "StepCompleted"):
            assert done["attempt"] == dispatches[done["step"]], (eid, done, dispatches)
        again = [e for e in events if e["type"] == "StepRescheduled"]
        if partition_for(eid) in on_victim:
            assert [(e["step"], e["attempt"], e["reason"]) for e in again] == [
                ("slow_a", 2, "owner changed")
            ], (eid, again)
            rerun += 1
        else:
            assert again == [], eid
    assert rerun > 10


async def test_a_zombie_stopped_before_its_commit_never_becomes_visible(
    settings: Settings, processes: Processes, client: Client, unique, tmp_path: Path
) -> None:
    trigger = tmp_path / "pause-before-commit"
    zombie = processes.worker(CEREBELUM_FAULT_PAUSE_BEFORE_COMMIT=str(trigger))
    processes.worker()
    processes.worker()
    logs = [log_of(processes, i) for i in range(3)]
    await wait_until(
        lambda: sum(len(owned(log)) for log in logs) == 64, 60, "three workers owning 64"
    )
    zombie_parts = owned(logs[0])
    since = await end_offsets(settings)
    first = [unique(f"before-{i}") for i in range(150)]
    acks = [
        await client.start_nowait("slow", {"n": i, "pause": 0.5}, e) for i, e in enumerate(first)
    ]
    await asyncio.gather(*acks)
    trigger.touch()  # the zombie's next transaction stops between its offsets and its commit
    await wait_until(lambda: not trigger.exists(), 30, "the zombie pausing")
    paused_at = time.time()
    try:
        # Its session expires; the survivors take its partitions and finish its executions.
        await wait_until(
            lambda: owned(logs[1]) | owned(logs[2]) >= zombie_parts, 60, "the survivors owning all"
        )
        on_zombie = [e for e in first if partition_for(e) in zombie_parts]
        done = await asyncio.gather(*(client.wait(e, timeout=120) for e in on_zombie))
        assert {r.status for r in done} == {"completed"}
        fencing = [line for log in logs[1:] for line in log.read_text().splitlines()
                   if f"fenced {settings.names.transactional_id_prefix}" in line]  # fmt: skip
        assert fencing, "no survivor fenced the zombie's open transaction"
        lines_before = len(logs[0].read_text().splitlines())
    finally:
        os.kill(zombie.pid, signal.SIGCONT)
    # Awake, the zombie tries to commit what it held: the broker refuses it.
    await wait_until(
        lambda: any(
            "transaction failed" in line for line in logs[0].read_text().splitlines()[lines_before:]
        ),
        30,
        "the zombie's commit failing",
    )
    then = [unique(f"after-{i}") for i in range(60)]
    acks = [await client.start_nowait("w3", {"n": i}, e) for i, e in enumerate(then)]
    await asyncio.gather(*acks)
    # (Client.wait hands each result out once: the zombie's were taken above.)
    rest = [e for e in first if e not in on_zombie] + then
    results = await asyncio.gather(*(client.wait(e, timeout=120) for e in rest))
    assert {r.status for r in results} == {"completed"}
    history = await events_since(settings, since, set(first + then))
    for eid, events in history.items():
        assert_gapless(events)  # a visible zombie transaction would repeat versions
        assert_results_recorded_once(events)
        assert sum(e["type"] == "ExecutionCompleted" for e in events) == 1, eid
    print(f"\nzombie paused at {paused_at:.1f} with {len(on_zombie)} executions; {fencing[0]}")
