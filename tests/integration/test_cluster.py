"""The cluster view: two workers share the 64 partitions; the API and the CLI say who owns what."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from cerebelum.admin.cluster import cluster_view
from cerebelum.client import Client, partition_for
from cerebelum.config import Settings
from tests.conftest import ROOT, Processes, process_env
from tests.helpers import in_process_api

pytestmark = pytest.mark.integration

# Two workers joining one after the other take two rebalances; with the tests' 6 s session
# timeout (a stale member from an earlier test lingers that long) 60 s is ample.
SETTLE_TIMEOUT_S = 60.0


@pytest.fixture
async def api(
    settings: Settings, topics: None, database: None, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_api(settings, tmp_path) as http:
        yield http


async def poll(
    fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float, what: str
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout:.0f} s; last: {value!r}"[:3000])
        await asyncio.sleep(0.5)


def split_between(view: dict[str, Any], client_ids: set[str]) -> bool:
    workers = view["workers"]
    return (
        view["state"] == "Stable"
        and {w["client_id"] for w in workers} == client_ids
        and sorted(len(w["partitions"]) for w in workers) == [32, 32]
    )


async def test_two_workers_own_32_partitions_each_and_executions_name_their_owner(
    settings: Settings,
    processes: Processes,
    client: Client,
    api: httpx.AsyncClient,
    unique: Callable[[str], str],
) -> None:
    workers = [processes.worker(), processes.worker()]
    processes.mirror()
    host = socket.gethostname()
    client_ids = {settings.names.worker_client_id(f"{host}:{w.pid}") for w in workers}

    async def get_view() -> dict[str, Any]:
        response = await api.get("/cluster")
        if response.status_code == 503:  # the group is still forming; the API says so
            return {"state": "unavailable", "workers": [], "body": response.text}
        assert response.status_code == 200, response.text
        return response.json()

    view = await poll(get_view, lambda v: split_between(v, client_ids), SETTLE_TIMEOUT_S,
                      "two workers owning 32 partitions each")  # fmt: skip
    assert view["unowned_partitions"] == []
    assert len(view["partitions"]) == 64
    owned = sorted(p for w in view["workers"] for p in w["partitions"])
    assert owned == list(range(64))
    for w in view["workers"]:
        assert (
            w["member_id"]
            and w["client_id"].startswith(settings.names.worker_client_id_prefix)
            and w["host"]
        )
        assert all(view["partitions"][p]["owner"] == w["client_id"] for p in w["partitions"])
    assert view["mirror"]["group"] == settings.names.mirror_group

    # A completed execution: its row names its partition and that partition's owner.
    eid = unique("cluster-w3")
    result = await client.run("w3", {"n": 1}, eid, timeout=60)
    assert result.status == "completed"

    async def get_row() -> httpx.Response:
        return await api.get(f"/executions/{eid}")

    response = await poll(get_row, lambda r: r.status_code == 200 and
                          r.json()["status"] == "completed", 30, "the mirrored row")  # fmt: skip
    row = response.json()
    assert row["partition"] == partition_for(eid)
    view = await get_view()
    assert row["owner"] == view["partitions"][row["partition"]]["owner"]
    assert row["owner"] in client_ids

    # A running execution counts as live on its partition (the mirror fills kafka_partition).
    slow = unique("cluster-slow")
    await client.start("slow", {"n": 1, "pause": 4}, slow)
    p = partition_for(slow)
    view = await poll(get_view, lambda v: (v["partitions"][p]["live_executions"] or 0) >= 1, 10,
                      "a live execution on its partition")  # fmt: skip
    assert view["live_executions"] >= 1
    assert (await client.wait(slow, timeout=60)).status == "completed"

    # The same view from the library and from the CLI.
    direct = await cluster_view(settings)
    assert {w["client_id"] for w in direct["workers"]} == client_ids
    assert direct["live_executions"] is None  # no pool given: no live counts
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cerebelum", "cluster", "--json"],
        cwd=ROOT, env=process_env(settings), capture_output=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr.decode()
    printed = orjson.loads(out.stdout)
    assert {w["client_id"] for w in printed["workers"]} == client_ids
    assert len(printed["partitions"]) == 64 and printed["live_executions"] is not None
    text = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cerebelum", "cluster"],
        cwd=ROOT, env=process_env(settings), capture_output=True, timeout=60,
    )  # fmt: skip
    assert text.returncode == 0, text.stderr.decode()
    assert all(cid in text.stdout.decode() for cid in client_ids)
    assert "(32)" in text.stdout.decode()


async def test_an_unknown_execution_is_still_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/executions/nobody-at-all-here")
    assert response.status_code == 404
