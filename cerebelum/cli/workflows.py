"""`cerebelum workflows [--json] [--graph NAME]`: what the live workers run.

Reads the workers' published registries (cerebelum.workflows) and the worker group (Kafka), and
the live executions per version (PostgreSQL, when it answers): the same as GET /workflows.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import asyncpg
import orjson
from aiokafka.errors import KafkaError

from cerebelum.admin.workflows import WorkflowDirectory, version_rows
from cerebelum.api import queries
from cerebelum.cli._commands import fail, quiet
from cerebelum.config import Settings
from cerebelum.db import connect_pool

log = logging.getLogger(__name__)
TIMEOUT_S = 15.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "workflows",
        help="list the workflows the live workers run, their versions and live executions",
        description="The workflows the workers in the group run (from the registries they "
        "publish), each version newest first with the workers running it and its live "
        "executions; --graph NAME prints that workflow's graph as JSON.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per workflow")
    p.add_argument("--graph", metavar="NAME", help="print this workflow's newest graph (JSON)")
    p.add_argument("--timeout", type=float, default=TIMEOUT_S, help="for Kafka (default 15 s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    quiet(args)
    try:
        return asyncio.run(_show(Settings.from_env(), args))
    except (KafkaError, OSError, TimeoutError) as exc:
        return fail(f"cannot read the workers' workflows from Kafka: {exc!r}")


async def _show(settings: Settings, args: argparse.Namespace) -> int:
    directory = WorkflowDirectory(settings)
    try:
        async with asyncio.timeout(args.timeout):
            await directory.load()
            live = await directory.live_workflows()
    finally:
        await directory.close()
    counts = await _counts(settings)
    if args.graph is not None:
        versions = live.workflows.get(args.graph)
        if not versions:
            return fail(f"no live worker runs workflow {args.graph!r}")
        graph = live.graphs.get((args.graph, versions[0]))
        if graph is None:
            return fail(f"the workers published no graph of {args.graph!r} (older workers?)")
        print(orjson.dumps(graph, option=orjson.OPT_INDENT_2).decode())
        return 0
    if not live.live_workers:
        print("no live workers")
        return 0
    for name, rows in version_rows(live, counts).items():
        if args.json:
            for row in rows:
                row.pop("graph", None)
            print(orjson.dumps({"name": name, "versions": rows}).decode())
            continue
        for row in rows:
            live_n = "?" if row["live_executions"] is None else row["live_executions"]
            blocked = "?" if row["blocked_executions"] is None else row["blocked_executions"]
            mark = "*" if row["newest"] else " "
            workers = ", ".join(row["workers"]) or "none (its executions are blocked)"
            print(f"{name:<24} {mark}{row['version']:<14} live {live_n:<6} "
                  f"blocked {blocked:<6} workers {workers}")  # fmt: skip
    if live.unpublished:
        print(f"(workers without a published registry: {', '.join(live.unpublished)})")
    return 0


async def _counts(settings: Settings) -> dict[tuple[str, str], tuple[int, int]] | None:
    """(live, blocked) executions per (workflow, version); None (shown as ?) if PostgreSQL is
    away."""
    try:
        pool = await asyncio.wait_for(connect_pool(settings.namespace_database_url, max_size=1), 5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        log.info("workflows: no live counts (%r)", exc)
        return None
    try:
        return await queries.live_and_blocked_by_version(pool)
    finally:
        await pool.close()
