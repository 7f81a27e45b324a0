"""Deploys that never destroy work (decisions.md §6), on the real services: executions parked
by the old code are held (blocked) by a worker without their version, visible over the API
with a signal kept meanwhile, and resume by themselves when the old code is back; a declared
mapping moves them to the new version; a mapping that does not cover where they stand is
refused and they stay blocked. Workflows: tests/apps_versions.py.

Three deploys (old, new, both), each a worker process; a mirror; the API in this process.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from typing import Any

import httpx
import pytest

from cerebelum.client import Client
from cerebelum.config import Settings
from tests.conftest import Processes

pytestmark = pytest.mark.integration

WAIT_S = 45.0


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM: the worker settles, commits and leaves the group, so its partitions move now."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


async def until(http: httpx.AsyncClient, eid: str, status: str) -> dict[str, Any]:
    response = await http.get(f"/executions/{eid}", params={"until": status, "timeout": WAIT_S})
    assert response.status_code == 200, response.text
    row = response.json()
    assert row["until"]["met"], row
    return row


async def event_types(http: httpx.AsyncClient, eid: str) -> list[str]:
    response = await http.get(f"/executions/{eid}/events")
    assert response.status_code == 200, response.text
    return [e["type"] for e in response.json()["events"]]


async def test_deploys_hold_resume_and_migrate_parked_executions(
    settings: Settings,
    processes: Processes,
    api: httpx.AsyncClient,
    client: Client,
    unique: Any,
) -> None:
    started = time.monotonic()
    processes.mirror()
    held, moved, refused = unique("held"), unique("moved"), unique("refused")
    # 1. The old code parks one execution of each workflow at its approval.
    old = processes.worker("tests.apps_versions", CEREBELUM_TEST_DEPLOY="old")
    for workflow, eid in (("ver_held", held), ("ver_moved", moved), ("ver_refused", refused)):
        await client.start(workflow, {"id": eid}, eid)
    for eid in (held, moved, refused):
        row = await until(api, eid, "waiting")
        assert row["workflow_version"] == "v1"
    stop(old)

    # 2. The new code: held (blocked, visible), moved (migrated), refused (blocked, why).
    new = processes.worker("tests.apps_versions", CEREBELUM_TEST_DEPLOY="new")
    row = await until(api, held, "blocked")
    assert row["workflow_version"] == "v1"
    assert row["blocked"]["waiting_for"] == "v1" and row["blocked"]["versions_here"] == ["v2"]
    listed = await api.get("/executions", params={"status": "blocked", "workflow": "ver_held"})
    assert held in [x["execution_id"] for x in listed.json()["executions"]]
    counts = (await api.get("/executions/counts")).json()["live"]
    assert {"workflow": "ver_held", "status": "blocked", "count": 1} in counts
    row = await until(api, refused, "blocked")
    assert "no mapping for wait 'approval'" in row["blocked"]["reason"], row["blocked"]
    versions = {w["name"]: w["versions"] for w in (await api.get("/workflows")).json()["workflows"]}
    old_held = [v for v in versions["ver_held"] if v["version"] == "v1"]
    assert old_held and old_held[0]["workers"] == [] and old_held[0]["blocked_executions"] == 1
    assert "ExecutionMigrated" in await event_types(api, moved)
    row = await until(api, moved, "waiting")
    assert row["workflow_version"] == "v2"
    # A signal to a blocked execution is kept; one to the migrated one completes it on v2.
    await client.signal(held, "approval", {"approved": True, "by": "ana"})
    await client.signal(moved, "approval", {"approved": True, "by": "bo"})
    row = await until(api, moved, "completed")
    assert row["output"] == {"id": moved, "approved_by": "bo", "shape": "v2"}
    for _ in range(50):  # the kept signal is recorded, the execution still blocked
        if "SignalReceived" in await event_types(api, held):
            break
        await asyncio.sleep(0.1)
    assert (await event_types(api, held))[-1] == "SignalReceived"
    assert (await api.get(f"/executions/{held}")).json()["status"] == "blocked"
    stop(new)

    # 3. Old and new code together: the held execution resumes by itself (restore), takes the
    # kept signal and completes on v1; the refused one stays blocked (v2 still migrates from
    # v1, so v1 is retired here) and a cancel needs no definition.
    processes.worker("tests.apps_versions", CEREBELUM_TEST_DEPLOY="both")
    row = await until(api, held, "completed")
    assert row["output"] == {"id": held, "approved_by": "ana", "shape": "v1"}
    history = await event_types(api, held)
    assert history.count("ExecutionBlocked") == 1 and "ExecutionResumed" in history
    await client.cancel(refused, "v1 is gone")
    row = await until(api, refused, "cancelled")
    assert row["error"]["message"] == "v1 is gone"
    print(f"versions: deploys took {time.monotonic() - started:.1f} s")
