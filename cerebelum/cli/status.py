"""`cerebelum status ID [--events]`: an execution as PostgreSQL holds it (via the mirror)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import asyncpg
import orjson

from cerebelum.api import queries
from cerebelum.cli._commands import bad_ids, fail, not_found, quiet
from cerebelum.config import Settings
from cerebelum.db import connect_pool


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "status",
        help="show an execution (status, current step, output, error) from PostgreSQL",
        description="Read an execution's row (and with --events its history) from PostgreSQL, "
        "where the mirror writes every event. Reads CEREBELUM_DATABASE_URL.",
    )
    p.add_argument("execution_id")
    p.add_argument("--events", action="store_true", help="also list its events in order")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    quiet(args)
    code = bad_ids((args.execution_id, "execution_id"))
    if code is not None:
        return code
    try:
        return asyncio.run(_show(Settings.from_env(), args.execution_id, args.events))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return fail(f"cannot read PostgreSQL: {exc!r}")


async def _show(settings: Settings, execution_id: str, with_events: bool) -> int:
    pool = await connect_pool(settings.namespace_database_url, max_size=1)
    try:
        row = await queries.get_execution(pool, execution_id)
        if row is None:
            return await not_found(pool, execution_id)
        print(_dumps(row))
        if with_events:
            for e in await queries.list_events(pool, execution_id, 0, 10_000) or []:
                print(f"  v{e['version']:<4} {e['type']:<20} {_dumps(_fields(e['data']))}")
    finally:
        await pool.close()
    return 0


def _fields(event: dict[str, Any]) -> dict[str, Any]:
    envelope = {"execution_id", "version", "type", "schema", "at"}
    return {k: v for k, v in event.items() if k not in envelope}


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()
