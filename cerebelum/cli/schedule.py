"""`cerebelum schedule create|list|pause|resume|trigger|delete`: durable schedules.

    cerebelum schedule create NAME --workflow W (--cron EXPR [--timezone TZ] | --every SECONDS)
                              [--inputs JSON] [--catchup skip|one|all] [--overlap skip|allow|cancel]
    cerebelum schedule list [--json]
    cerebelum schedule pause|resume|trigger|delete NAME

A schedule is the execution `schedule.<NAME>` of the built-in workflow cerebelum.schedule
(decisions.md §19): create produces its start, pause/resume/trigger are signals to it, delete
cancels it (its runs carry on); list reads PostgreSQL. Errors are one line.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import asyncpg
import orjson

from cerebelum.api.schedules import LIVE, describe
from cerebelum.cli._commands import (
    EXIT_USAGE,
    add_timeout,
    bad_ids,
    fail,
    quiet,
    run_command,
    send_to,
)
from cerebelum.client import Client
from cerebelum.config import Settings
from cerebelum.core.schedules import CATCHUP, OVERLAP, SCHEDULE_WORKFLOW, parse_spec, schedule_id
from cerebelum.db import connect_pool


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "schedule",
        help="create, list, pause, resume, trigger and delete durable schedules",
        description="Durable schedules: one execution per tick (cron in a time zone, or every "
        "N seconds), exactly once whatever fails.",
    )
    usage = "usage: cerebelum schedule create|list|pause|resume|trigger|delete ..."
    parser.set_defaults(func=lambda args: fail(usage, EXIT_USAGE))
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    p = commands.add_parser("create", help="create a schedule",
                            description="Create a schedule; prints its next runs.")  # fmt: skip
    p.add_argument("name")
    p.add_argument("--workflow", required=True, help="the workflow each tick starts")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="a cron expression, e.g. '0 9 * * mon-fri'")
    when.add_argument("--every", type=float, metavar="SECONDS", help="an interval")
    p.add_argument("--timezone", default="UTC", help="the cron expression's IANA time zone")
    p.add_argument("--inputs", default="{}", help="each run's inputs, as JSON")
    p.add_argument("--catchup", choices=CATCHUP, default=CATCHUP[0],
                   help="what a late tick runs of those missed (default skip)")  # fmt: skip
    p.add_argument("--overlap", choices=OVERLAP, default=OVERLAP[0],
                   help="a tick while a run is live (default skip)")  # fmt: skip
    add_timeout(p)
    p.set_defaults(func=_create)
    p = commands.add_parser(
        "list", help="the live schedules and their next runs",
        description="Active and paused schedules, from PostgreSQL.",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_list)
    for action, text in (("pause", "pause a schedule (no runs until resumed)"),
                         ("resume", "resume a paused schedule"),
                         ("trigger", "start one run now"),
                         ("delete", "delete a schedule (its runs carry on)")):  # fmt: skip
        p = commands.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("name")
        add_timeout(p)
        p.set_defaults(func=_act, action=action)


def _create(args: argparse.Namespace) -> int:
    quiet(args)
    try:
        inputs = orjson.loads(args.inputs)
    except orjson.JSONDecodeError as exc:
        return fail(f"--inputs is not valid JSON: {exc}", EXIT_USAGE)
    body = {"name": args.name, "workflow": args.workflow, "inputs": inputs,
            "catchup": args.catchup, "overlap": args.overlap}  # fmt: skip
    if args.cron is not None:
        body.update(cron=args.cron, timezone=args.timezone)
    else:
        body["every_s"] = args.every
    try:
        spec = parse_spec(body)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)

    async def send(client: Client) -> None:
        await client.start(SCHEDULE_WORKFLOW, spec, schedule_id(spec["name"]))

    code = run_command(send_to(args, send, check=False))
    if code == 0:
        shown = describe(spec, "running", int(time.time() * 1000))
        print(f"schedule {spec['name']!r} created; next runs: {', '.join(shown['next_runs'])}")
    return code


def _list(args: argparse.Namespace) -> int:
    quiet(args)

    async def go() -> int:
        pool = await connect_pool(Settings.from_env().namespace_database_url, max_size=1)
        try:
            rows = await pool.fetch(LIVE, SCHEDULE_WORKFLOW)
        finally:
            await pool.close()
        now = int(time.time() * 1000)
        for r in rows:
            spec = r["inputs"] if isinstance(r["inputs"], dict) else orjson.loads(r["inputs"])
            s = describe(spec, r["status"], now)
            if args.json:
                print(orjson.dumps(s).decode())
            else:
                when = (
                    s.get("cron")
                    and f"cron {s['cron']} {s['timezone']}"
                    or f"every {s['every_s']}s"
                )
                print(f"{s['name']:<30} {s['state']:<7} {s['workflow']:<20} {when:<30} "
                      f"next {', '.join(s['next_runs']) or '-'}")  # fmt: skip
        return 0

    try:
        return asyncio.run(go())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return fail(f"cannot read PostgreSQL: {exc!r}")


def _act(args: argparse.Namespace) -> int:
    quiet(args)
    code = bad_ids((args.name, "schedule name"))
    if code is not None:
        return code
    sid = schedule_id(args.name)
    args.execution_id = sid
    action = args.action

    async def send(client: Client) -> None:
        if action == "delete":
            await client.cancel(sid, "schedule deleted from the CLI")
        else:
            await client.signal(sid, action, None)

    code = run_command(send_to(args, send))
    if code == 0:
        print(f"schedule {args.name!r}: {action} sent")
    return code
