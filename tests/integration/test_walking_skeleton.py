"""End to end: start-commands on Kafka -> workers -> events -> mirror -> PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from cerebelum.client import Client
from cerebelum.config import Settings

pytestmark = pytest.mark.integration

N = 1_000


async def wait_for_rows(settings: Settings, ids: list[str], timeout: float) -> list[asyncpg.Record]:
    """Poll PostgreSQL until every id has a terminal executions row."""
    conn = await asyncpg.connect(settings.namespace_database_url)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            rows = await conn.fetch(
                "SELECT execution_id, status, output, last_version FROM executions "
                "WHERE execution_id = ANY($1::text[]) AND status IN ('completed', 'failed')",
                ids,
            )
            if len(rows) == len(ids) or asyncio.get_running_loop().time() > deadline:
                return rows
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def versions_by_execution(settings: Settings, ids: list[str]) -> dict[str, list[int]]:
    conn = await asyncpg.connect(settings.namespace_database_url)
    try:
        rows = await conn.fetch(
            "SELECT execution_id, array_agg(version ORDER BY version) AS versions FROM events "
            "WHERE execution_id = ANY($1::text[]) GROUP BY execution_id",
            ids,
        )
        return {r["execution_id"]: list(r["versions"]) for r in rows}
    finally:
        await conn.close()


async def test_thousand_executions_reach_postgres(
    settings: Settings, database: None, processes, client: Client, unique
) -> None:
    processes.worker()
    processes.worker()
    processes.mirror()
    ids = [unique(f"w3-{i}") for i in range(N)]
    acks = [await client.start_nowait("w3", {"n": i}, eid) for i, eid in enumerate(ids)]
    await asyncio.gather(*acks)

    results = await asyncio.gather(*(client.wait(eid, timeout=120) for eid in ids))
    assert all(r.status == "completed" for r in results)
    assert [r.output for r in results] == [{"n": (i + 1) * 2} for i in range(N)]

    import orjson

    rows = await wait_for_rows(settings, ids, timeout=60)
    assert len(rows) == N
    by_id = {r["execution_id"]: r for r in rows}
    for i, eid in enumerate(ids):
        row = by_id[eid]
        assert row["status"] == "completed"
        output = row["output"]
        assert (orjson.loads(output) if isinstance(output, str) else output) == {"n": (i + 1) * 2}
    versions = await versions_by_execution(settings, ids)
    # W3: Started, then (Scheduled, Completed) x 3, then ExecutionCompleted = 8 events.
    assert all(versions[eid] == list(range(1, 9)) for eid in ids)
    assert all(by_id[eid]["last_version"] == 8 for eid in ids)

    # The CLI shows the same execution from PostgreSQL.
    import subprocess
    import sys

    from tests.conftest import ROOT, process_env

    out = subprocess.run(
        [sys.executable, "-m", "cerebelum", "status", ids[7], "--events"],
        cwd=ROOT,
        env=process_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert '"status":"completed"' in out.stdout and "ExecutionCompleted" in out.stdout
