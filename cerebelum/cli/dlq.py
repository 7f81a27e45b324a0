"""`cerebelum dlq list|show|replay`: the dead letters the mirror copied into PostgreSQL.

    cerebelum dlq list [--reason TEXT] [--execution-id ID] [--limit N] [--cursor C] [--json]
    cerebelum dlq show ID
    cerebelum dlq replay ID [--force] [--timeout S]

The same store as GET /dlq and POST /dlq/{id}/replay (cerebelum.admin.dead_letters). An ID is
`<partition>-<offset>` in cerebelum.dlq. Errors are one line.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

import asyncpg
import orjson

from cerebelum.admin import dead_letters as store
from cerebelum.cli._commands import EXIT_USAGE, Deadline, bad_ids, fail, kafka_away, quiet
from cerebelum.client import Client
from cerebelum.config import Settings
from cerebelum.db import connect_pool
from cerebelum.errors import KafkaUnavailable


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "dlq",
        help="list, show and replay dead letters (commands the workers refused)",
        description="Dead letters, from PostgreSQL (the mirror copies cerebelum.dlq there).",
    )
    parser.set_defaults(func=lambda args: fail("usage: cerebelum dlq list|show|replay ...",
                                               EXIT_USAGE))  # fmt: skip
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    p = commands.add_parser("list", help="newest first, a page at a time",
                            description="Dead letters newest first; the next page's cursor on "
                            "stderr.")  # fmt: skip
    p.add_argument("--reason", help="a part of the reason, any case")
    p.add_argument("--execution-id")
    p.add_argument("--limit", type=int, default=50, help="1-500, default 50")
    p.add_argument("--cursor", help="the next page: the cursor the previous page printed")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_list)
    p = commands.add_parser("show", help="one dead letter with its command",
                            description="A dead letter and its command, as JSON.")  # fmt: skip
    p.add_argument("id", help="partition-offset")
    p.set_defaults(func=_show)
    p = commands.add_parser(
        "replay",
        help="send a dead letter's command again, keyed by its execution id",
        description="Produce the refused command again to its execution's home partition. A "
        "dead letter is replayed once unless --force.",
    )
    p.add_argument("id", help="partition-offset")
    p.add_argument("--force", action="store_true", help="replay even if replayed before")
    p.add_argument("--timeout", type=float, default=15.0, help="for Kafka (default 15 s)")
    p.set_defaults(func=_replay)


def _list(args: argparse.Namespace) -> int:
    code = bad_ids((args.execution_id, "execution_id"))
    if code is not None:
        return code
    if not 1 <= args.limit <= 500:
        return fail("--limit must be 1-500", EXIT_USAGE)
    query = store.DeadLetterQuery(args.reason, args.execution_id, None, None, args.limit,
                                  args.cursor)  # fmt: skip

    async def go(pool: asyncpg.Pool) -> int:
        page = await store.list_dead_letters(pool, query)
        for d in page["dead_letters"]:
            if args.json:
                print(_dumps(d))
            else:
                print(f"{d['id']:<14} {str(d['at'])[:23]:<24} {d['execution_id'] or '-':<40} "
                      f"{'replayed' if d['replayed_at'] else '':<9} {d['reason']}")  # fmt: skip
        if page["next_cursor"]:
            print(f"more: --cursor {page['next_cursor']}", file=sys.stderr)
        return 0

    return _with_pool(args, go)


def _show(args: argparse.Namespace) -> int:
    async def go(pool: asyncpg.Pool) -> int:
        print(_dumps(await store.get_dead_letter(pool, args.id)))
        return 0

    return _with_pool(args, go)


def _replay(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    deadline = Deadline(args.timeout)

    async def go(pool: asyncpg.Pool) -> int:
        try:
            async with Client(settings, timeout=deadline.left()) as client:
                done = await store.replay(pool, client, args.id, f"cli:{getpass.getuser()}",
                                          args.force)  # fmt: skip
        except KafkaUnavailable as exc:
            return kafka_away(exc, deadline)
        print(f"replayed {done['id']} to {done['execution_id']}")
        return 0

    return _with_pool(args, go, settings)


def _with_pool(args: argparse.Namespace, go: Any, settings: Settings | None = None) -> int:
    quiet(args)
    url = (settings or Settings.from_env()).namespace_database_url

    async def run() -> int:
        pool = await connect_pool(url, max_size=1)
        try:
            return int(await go(pool))
        finally:
            await pool.close()

    try:
        return asyncio.run(run())
    except store.DeadLetterProblem as problem:
        return fail(str(problem), EXIT_USAGE if problem.status == 422 else 1)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return fail(f"cannot read PostgreSQL: {exc!r}")


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()
