"""The API's reads from PostgreSQL: one function per query, rows out as plain dicts."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson

from cerebelum.core import events as ev
from cerebelum.core.state import BLOCKED

EXECUTION_COLUMNS = (
    "execution_id, workflow, workflow_version, status, current_step, inputs, output, error, "
    "started_at, updated_at, finished_at, last_version"
)


async def get_execution(pool: asyncpg.Pool, execution_id: str) -> dict[str, Any] | None:
    """The executions row, or None; with `blocked` (null unless its status is blocked):
    the version it waits for, the versions its worker has and why (its last ExecutionBlocked,
    decisions.md §6)."""
    row = await pool.fetchrow(
        f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE execution_id = $1", execution_id
    )
    if row is None:
        return None
    out = dict(row)
    out["blocked"] = None
    if out["status"] == BLOCKED:
        data = await pool.fetchval(
            "SELECT data FROM events WHERE execution_id = $1 AND type = $2 "
            "ORDER BY version DESC LIMIT 1",
            execution_id,
            ev.EXECUTION_BLOCKED,
        )
        if data is not None:
            event = orjson.loads(data) if isinstance(data, (str, bytes)) else data
            out["blocked"] = {k: event.get(k) for k in ("waiting_for", "versions_here", "reason")}
    return out


async def list_events(
    pool: asyncpg.Pool, execution_id: str, after_version: int, limit: int
) -> list[dict[str, Any]] | None:
    """Events after `after_version` in version order; None if the execution has no events."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT version, type, schema, at, data, kafka_partition, kafka_offset FROM events "
            "WHERE execution_id = $1 AND version > $2 ORDER BY version LIMIT $3",
            execution_id,
            after_version,
            limit,
        )
        if not rows and not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM events WHERE execution_id = $1)", execution_id
        ):
            return None
    return [dict(r) for r in rows]


async def history_upto(
    pool: asyncpg.Pool, execution_id: str, version: int | None
) -> tuple[int | None, list[dict[str, Any]]]:
    """(the execution's last version, its events' data from version 1 to `version` or to its
    last); (None, []) if it has no events."""
    async with pool.acquire() as conn:
        last = await conn.fetchval(
            "SELECT max(version) FROM events WHERE execution_id = $1", execution_id
        )
        if last is None:
            return None, []
        rows = await conn.fetch(
            "SELECT data FROM events WHERE execution_id = $1 AND version <= $2 ORDER BY version",
            execution_id,
            min(version or last, last),
        )
    return last, [r["data"] for r in rows]


async def list_page(pool: asyncpg.Pool, sql: str, args: list[Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch(sql, *args)]


async def live_executions_by_version(pool: asyncpg.Pool) -> dict[tuple[str, str], int]:
    """(workflow, version) -> executions not ended, blocked ones included; the predicate is
    the partial index's (migration 003), so only live rows are read."""
    return {key: live for key, (live, _) in (await live_and_blocked_by_version(pool)).items()}


async def live_and_blocked_by_version(
    pool: asyncpg.Pool,
) -> dict[tuple[str, str], tuple[int, int]]:
    """(workflow, version) -> (executions not ended, of which blocked): an old version can be
    retired once it has none (decisions.md §6)."""
    rows = await pool.fetch(
        "SELECT workflow, workflow_version, count(*) AS n, "
        f"count(*) FILTER (WHERE status = '{BLOCKED}') AS blocked FROM executions "
        "WHERE status NOT IN ('completed', 'failed', 'cancelled') GROUP BY 1, 2"
    )
    return {(r["workflow"], r["workflow_version"]): (r["n"], r["blocked"]) for r in rows}


async def counts(pool: asyncpg.Pool, since_s: float) -> dict[str, Any]:
    """{"live": [{workflow, status, count}] of executions not ended (the partial index of
    migration 003), "ended": the same of those that ended in the last `since_s` seconds (a
    range of the update-time index of migration 006)}."""
    live = await pool.fetch(
        "SELECT workflow, status, count(*) AS count FROM executions "
        "WHERE status NOT IN ('completed', 'failed', 'cancelled') "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    )
    ended = await pool.fetch(
        "SELECT workflow, status, count(*) AS count FROM executions "
        "WHERE updated_at >= now() - make_interval(secs => $1) "
        "AND status IN ('completed', 'failed', 'cancelled') GROUP BY 1, 2 ORDER BY 1, 2",
        since_s,
    )
    return {"live": [dict(r) for r in live], "ended": [dict(r) for r in ended],
            "ended_within_s": since_s}  # fmt: skip


async def database_ok(pool: asyncpg.Pool, timeout: float) -> bool:
    """True if a connection answers `SELECT 1` within `timeout` seconds."""
    try:
        # The timeout covers acquiring (connecting) too, not only the query.
        return bool(await asyncio.wait_for(pool.fetchval("SELECT 1"), timeout))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
