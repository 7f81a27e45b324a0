"""A worker whose app lacks a workflow another live worker runs (a rolling deploy that adds
one): the starts of it that land on its partitions are held as blocked, not dead-lettered, and
start as soon as a worker with it owns their partitions (decisions.md §6)."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from cerebelum.client import Client
from cerebelum.config import Settings
from tests.conftest import LOGS, Processes
from tests.helpers import end_offsets, events_since

pytestmark = pytest.mark.integration

NOTICE = "other workers of the group run workflows this one lacks ("


def noticed(text: str) -> bool:
    """The partial worker has read the other worker's registry and knows it runs invoice."""
    return any(NOTICE in line and " invoice," in line for line in text.splitlines())


async def test_starts_held_on_a_worker_without_the_workflow_run_once_it_moves(
    settings: Settings, processes: Processes, client: Client, unique
) -> None:
    partial = processes.worker("tests.apps_partial")
    processes.worker()
    log = LOGS / f"{processes.name}-0-worker.log"
    deadline = time.monotonic() + 60
    while not noticed(log.read_text()):
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)  # both own partitions (their shares are settled by now)
    since = await end_offsets(settings)
    ids = [unique(f"inv-{k}") for k in range(24)]
    for k, eid in enumerate(ids):
        await client.start("invoice", {"customer": f"c-{k}", "amount": k}, eid)
    await asyncio.sleep(3)
    history = await events_since(settings, since, set(ids))
    held = [e for e in ids if any(ev["type"] == "ExecutionBlocked" for ev in history[e])]
    assert held, "no start landed on the partial worker's partitions"
    assert len(held) < len(ids), "no start landed on the full worker's partitions"
    partial.send_signal(signal.SIGTERM)  # its partitions move to the worker with "invoice"
    partial.wait(30)
    results = await asyncio.gather(*(client.wait(e, timeout=60) for e in ids))
    assert [r.status for r in results] == ["completed"] * len(ids)
    assert [r.output["total"] for r in results] == [2 * k for k in range(len(ids))]
    history = await events_since(settings, since, set(ids))
    for eid in held:
        types = [e["type"] for e in history[eid]]
        assert types[:3] == ["ExecutionStarted", "ExecutionBlocked", "ExecutionResumed"], types
