"""Reading executions from PostgreSQL (where the mirror writes every event), as the API does:

    cerebelum list [--workflow W] [--status S ...] [--input PATH=VALUE ...] [--limit N]
                   [--cursor C] [--sort started|updated] [--json]
    cerebelum describe ID [--json]          the row and its step table
    cerebelum history ID [--json]           its events in order
    cerebelum state ID [--version N | --diff A..B]

The same queries and folds as GET /executions, /executions/{id}, /events and /state (cerebelum.
api.listing, .steps, .timetravel). Reads CEREBELUM_DATABASE_URL. Errors are one line.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from cerebelum.api import listing, queries
from cerebelum.api.steps import step_table
from cerebelum.api.timetravel import diff, states_at
from cerebelum.cli._commands import EXIT_USAGE, bad_ids, fail, not_found, quiet
from cerebelum.config import Settings
from cerebelum.core.state import STATUSES
from cerebelum.db import connect_pool

MAX_EVENTS = 10_000
_DIFF = re.compile(r"^(\d{1,9})\.\.(\d{1,9})$")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "list",
        help="list executions, newest first, a page at a time",
        description="List executions from PostgreSQL, newest first (by start, or --sort "
        "updated), filtered; prints the cursor of the next page on stderr.",
    )
    p.add_argument("--workflow")
    p.add_argument("--status", action="append", default=[],
                   help=f"repeatable: any of them ({', '.join(STATUSES)}, retrying)")  # fmt: skip
    p.add_argument("--id-prefix")
    p.add_argument("--input", action="append", default=[], metavar="PATH=VALUE",
                   help="inputs hold VALUE (JSON, else text) at PATH; repeatable")  # fmt: skip
    p.add_argument("--output", action="append", default=[], metavar="PATH=VALUE",
                   help="as --input, on the output")  # fmt: skip
    p.add_argument("--started-after", type=_time, metavar="ISO8601")
    p.add_argument("--started-before", type=_time, metavar="ISO8601")
    p.add_argument("--sort", choices=sorted(listing.SORTS), default="started")
    p.add_argument("--limit", type=int, default=50, help="rows per page (1-1000, default 50)")
    p.add_argument("--cursor", help="the next page: the cursor the previous page printed")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=lambda args: _run(args, _list))

    p = sub.add_parser(
        "describe",
        help="show an execution and its step table (attempts, durations, last error)",
        description="An execution's row and each step's runs, from PostgreSQL.",
    )
    p.add_argument("execution_id")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=lambda args: _run(args, _describe))

    p = sub.add_parser(
        "history",
        help="show an execution's events in order",
        description="An execution's events, version by version, from PostgreSQL.",
    )
    p.add_argument("execution_id")
    p.add_argument("--json", action="store_true", help="one JSON event per line")
    p.set_defaults(func=lambda args: _run(args, _history))

    p = sub.add_parser(
        "state",
        help="show an execution's state at a version, or what changed between two",
        description="The state the worker held after event --version (default: the latest), "
        "folded from the history by the engine's own code; or with --diff A..B the changes "
        "from version A to version B.",
    )
    p.add_argument("execution_id")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--version", type=int, help="after this event (1 = the start)")
    group.add_argument("--diff", metavar="A..B", help="what changed from version A to B")
    p.set_defaults(func=lambda args: _run(args, _state))


Command = Callable[[asyncpg.Pool, argparse.Namespace], Awaitable[int]]


def _run(args: argparse.Namespace, command: Command) -> int:
    quiet(args)
    code = bad_ids((getattr(args, "execution_id", None), "execution_id"))
    if code is not None:
        return code

    async def go() -> int:
        pool = await connect_pool(Settings.from_env().namespace_database_url, max_size=1)
        try:
            return await command(pool, args)
        finally:
            await pool.close()

    try:
        return asyncio.run(go())
    except listing.ListProblem as problem:
        return fail(str(problem), EXIT_USAGE)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return fail(f"cannot read PostgreSQL: {exc!r}")


async def _list(pool: asyncpg.Pool, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1_000:
        return fail("--limit must be 1-1000", EXIT_USAGE)
    pairs = [("input." + _path(x), _value(x)) for x in args.input]
    pairs += [("output." + _path(x), _value(x)) for x in args.output]
    request = listing.ListRequest(
        workflow=args.workflow, statuses=sorted(set(args.status)), id_prefix=args.id_prefix,
        started_after=args.started_after, started_before=args.started_before, sort=args.sort,
        limit=args.limit, cursor=args.cursor, contains=listing.json_filters(pairs),
    )  # fmt: skip
    sql, sql_args = listing.build_query(request, listing.SUMMARY_COLUMNS)
    body = listing.page(request, await queries.list_page(pool, sql, sql_args))
    rows = body["executions"]
    if args.json:
        for row in rows:
            print(_dumps(row))
    else:
        print(f"{'EXECUTION':<44} {'WORKFLOW':<16} {'STATUS':<10} {'STEP':<14} STARTED")
        for r in rows:
            print(f"{r['execution_id']:<44} {r['workflow'] or '':<16} {r['status'] or '':<10} "
                  f"{r['current_step'] or '':<14} {_when(r['started_at'])}")  # fmt: skip
    if body["next_cursor"]:
        print(f"more: --cursor {body['next_cursor']}", file=sys.stderr)
    return 0


async def _describe(pool: asyncpg.Pool, args: argparse.Namespace) -> int:
    row = await queries.get_execution(pool, args.execution_id)
    if row is None:
        return await not_found(pool, args.execution_id)
    events = await queries.list_events(pool, args.execution_id, 0, MAX_EVENTS) or []
    steps = step_table(e["data"] for e in events)
    if args.json:
        print(_dumps({**row, "steps": steps}))
        return 0
    for name in ("execution_id", "workflow", "workflow_version", "status", "current_step",
                 "started_at", "finished_at", "last_version"):  # fmt: skip
        print(f"{name + ':':<18}{_when(row[name]) if name.endswith('_at') else row[name]}")
    for name in ("inputs", "output", "error"):
        if row[name] is not None:
            print(f"{name + ':':<18}{_dumps(row[name])}")
    blocked = row.get("blocked")
    if blocked:  # held for want of its version (decisions.md §6)
        here = ", ".join(blocked["versions_here"] or []) or "none"
        print(f"{'blocked:':<18}waits for version {blocked['waiting_for']} (its worker has "
              f"{here}): {blocked['reason']}")  # fmt: skip
    queued = row.get("queued")
    if queued:  # waiting for a concurrency or rate limit's permit (decisions.md §20)
        what = f"step {queued['step']}" if queued.get("step") else f"key {queued.get('key')}"
        print(f"{'queued:':<18}waits for a permit of {queued['limiter']} ({what})")
    print(f"\n{'STEP':<20} {'STATUS':<10} {'ATTEMPTS':>8} {'DURATION':>10}  {'RAN ON':<32} "
          "LAST ERROR")  # fmt: skip
    for s in steps:
        error = s["last_error"]
        said = f"{error.get('type')}: {error.get('message')}" if error else ""
        took = "" if s["duration_ms"] is None else f"{s['duration_ms']} ms"
        # Every worker that ran it, as `cerebelum cluster` and the dashboard's grid name them.
        ran_on = ",".join(dict.fromkeys(r["worker"] for r in s["runs"] if r["worker"]))
        print(f"{s['step']:<20} {s['status']:<10} {s['attempts']:>8} {took:>10}  {ran_on:<32} "
              f"{said}")  # fmt: skip
    return 0


async def _history(pool: asyncpg.Pool, args: argparse.Namespace) -> int:
    events = await queries.list_events(pool, args.execution_id, 0, MAX_EVENTS)
    if events is None:
        return fail(f"no execution {args.execution_id!r} (yet: the mirror may lag)")
    first = events[0]["data"]["at"] if events else 0
    for e in events:
        data = e["data"]
        if args.json:
            print(_dumps(data))
        else:
            fields = {k: v for k, v in data.items()
                      if k not in ("execution_id", "version", "type", "schema", "at")}  # fmt: skip
            print(
                f"v{e['version']:<4} +{data['at'] - first:>8} ms  {e['type']:<20} {_dumps(fields)}"
            )
    return 0


async def _state(pool: asyncpg.Pool, args: argparse.Namespace) -> int:
    versions: list[int] = []
    if args.diff is not None:
        m = _DIFF.match(args.diff)
        if m is None or not 1 <= int(m[1]) <= int(m[2]):
            return fail("--diff must be A..B with 1 <= A <= B", EXIT_USAGE)
        versions = [int(m[1]), int(m[2])]
    elif args.version is not None:
        if args.version < 1:
            return fail("--version must be 1 or more", EXIT_USAGE)
        versions = [args.version]
    last, history = await queries.history_upto(
        pool, args.execution_id, max(versions or [0]) or None
    )
    if last is None:
        return fail(f"no execution {args.execution_id!r} (yet: the mirror may lag)")
    versions = versions or [last]
    if max(versions) > last:
        return fail(f"execution {args.execution_id!r} has no version {max(versions)} yet "
                    f"(its last is {last})")  # fmt: skip
    states = states_at(history, versions)
    if args.diff is not None:
        for change in diff(states[versions[0]], states[versions[1]]):
            print(_dumps(change))
    else:
        print(_dumps({"version": versions[0], "last_version": last, "state": states[versions[0]]}))
    return 0


def _path(pair: str) -> str:
    path, sep, _ = pair.partition("=")
    if not sep or not path:
        raise listing.ListProblem(f"{pair!r}: give PATH=VALUE")
    return path


def _value(pair: str) -> str:
    return pair.partition("=")[2]


def _time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _when(value: Any) -> str:
    return value.isoformat(timespec="milliseconds") if isinstance(value, datetime) else ""


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()
