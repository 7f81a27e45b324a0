"""Schedules on the real services (decisions.md §19): created, listed, paused, triggered,
resumed and deleted through the HTTP API and the CLI; one execution per tick."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from cerebelum.client import Client
from cerebelum.config import Settings
from tests.conftest import Processes, process_env
from tests.helpers import end_offsets, events_since

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(settings: Settings, topics: None, database: None) -> Iterator[None]:
    procs = Processes(settings, "schedules")
    procs.worker()
    procs.mirror()
    yield
    procs.stop_all()


async def fired(settings: Settings, since: dict, sid: str) -> list[dict]:
    events = (await events_since(settings, since, {sid}))[sid]
    return [e for e in events if e["type"] == "ScheduleFired"]


async def test_a_schedule_through_the_api(
    settings: Settings, cluster: None, api: httpx.AsyncClient, client: Client
) -> None:
    name = f"sched-{uuid.uuid4().hex[:8]}"
    sid = f"schedule.{name}"
    since = await end_offsets(settings)
    r = await api.post("/schedules", json={"name": name, "workflow": "w3", "every_s": 1,
                                           "inputs": {"n": 1}})  # fmt: skip
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "active" and len(r.json()["next_runs"]) == 3
    again = await api.post("/schedules", json={"name": name, "workflow": "w3", "every_s": 1})
    assert again.status_code in (202, 409)  # 409 once the mirror shows it
    bad = await api.post("/schedules", json={"name": name, "workflow": "w3", "cron": "* *"})
    assert bad.status_code == 422 and "5" in bad.json()["error"]

    first = (await wait_fired(settings, since, sid, lambda runs: len(runs) >= 2))[0]
    assert first["run"].startswith(f"{name}.") and first["run"].endswith("Z")
    result = await client.wait(first["run"], timeout=30)
    assert result.status == "completed" and result.output == {"n": 4}

    listed = (await api.get("/schedules")).json()["schedules"]
    assert name in [s["name"] for s in listed]
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "cerebelum", "schedule", "list"],
        env=process_env(settings), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and name in proc.stdout, proc.stderr

    assert (await api.post(f"/schedules/{name}/pause", json={})).status_code == 202
    await asyncio.sleep(1.5)  # a tick in flight may still land
    count = len(await fired(settings, since, sid))
    await asyncio.sleep(2.5)
    assert len(await fired(settings, since, sid)) == count  # paused: no tick runs
    assert (await api.post(f"/schedules/{name}/trigger", json={})).status_code == 202
    await wait_fired(settings, since, sid, lambda runs: any(e["manual"] for e in runs))
    assert (await api.post(f"/schedules/{name}/resume", json={})).status_code == 202
    count = len(await fired(settings, since, sid))
    await wait_fired(settings, since, sid, lambda runs: len(runs) > count + 1)
    # Like every state-changing route: Content-Type application/json, even without a body.
    assert (await api.request("DELETE", f"/schedules/{name}", json={})).status_code == 202
    await asyncio.sleep(1.5)
    count = len(await fired(settings, since, sid))
    await asyncio.sleep(2.5)
    assert len(await fired(settings, since, sid)) == count  # deleted: no more

    ids = [e["run"] for e in await fired(settings, since, sid)]
    assert len(ids) == len(set(ids))  # one execution per tick


async def wait_fired(
    settings: Settings, since: dict, sid: str, condition: Callable[[list[dict]], bool]
) -> list[dict]:
    deadline = time.monotonic() + 30
    while not condition(runs := await fired(settings, since, sid)):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.3)
    return runs
