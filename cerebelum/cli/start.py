"""`cerebelum start WORKFLOW --input JSON [--id ID] [--wait] [--timeout S]`: produce a start.

Refused at once, before anything is produced: an id or workflow name outside the id alphabet
(exit 2), a workflow that no live worker runs while every live worker has published what it
runs (exit 1). Kafka away, a start a worker dead-letters while --wait waits, or no result in
time: one line on stderr, exit 1.
"""

from __future__ import annotations

import argparse

import orjson

from cerebelum.admin.preflight import CHECK_TIMEOUT_S, check_start_once
from cerebelum.cli._commands import (
    DEFAULT_TIMEOUT_S,
    EXIT_USAGE,
    Deadline,
    bad_ids,
    fail,
    kafka_away,
    quiet,
    refused,
    run_command,
)
from cerebelum.client import Client
from cerebelum.config import Settings
from cerebelum.errors import CommandRejected, KafkaUnavailable

# --wait waits this long for the execution's end unless --timeout says otherwise.
DEFAULT_WAIT_S = 60.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "start",
        help="start an execution (produces a start-command to cerebelum.commands)",
        description="Produce a StartExecution command to cerebelum.commands, keyed by the "
        "execution id. With --wait, print the output once the execution ends. A workflow no "
        "live worker runs is refused at once; with no worker live at all the start is "
        "accepted and waits for the first one.",
    )
    p.add_argument("workflow", help="workflow name")
    p.add_argument("--input", default="{}", help="the inputs, as JSON (default {})")
    p.add_argument("--id", dest="execution_id", help="execution id (default: a new UUID)")
    p.add_argument("--wait", action="store_true", help="wait for the execution to end")
    p.add_argument(
        "--timeout",
        type=float,
        help=f"give up after this many seconds (default {DEFAULT_TIMEOUT_S:g}; with --wait "
        f"{DEFAULT_WAIT_S:g}, of which reaching Kafka at most {DEFAULT_TIMEOUT_S:g})",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    quiet(args)
    code = bad_ids((args.workflow, "workflow"), (args.execution_id, "execution_id"))
    if code is not None:
        return code
    try:
        inputs = orjson.loads(args.input)
    except orjson.JSONDecodeError as exc:
        return fail(f"--input is not valid JSON: {exc}", EXIT_USAGE)
    default = DEFAULT_WAIT_S if args.wait else DEFAULT_TIMEOUT_S
    return run_command(_start(args, inputs, Deadline(args.timeout or default)))


async def _start(args: argparse.Namespace, inputs: object, deadline: Deadline) -> int:
    settings = Settings.from_env()
    check_s = deadline.left(at_most=min(CHECK_TIMEOUT_S, deadline.seconds / 2))
    refusal = await check_start_once(settings, args.workflow, check_s)
    if refusal is not None:
        return refused(refusal)
    kafka_s = deadline.left(at_most=DEFAULT_TIMEOUT_S if args.wait else None)
    try:
        async with Client(settings, timeout=kafka_s) as client:
            if not args.wait:
                print(await client.start(args.workflow, inputs, args.execution_id))
                return 0
            result = await client.run(args.workflow, inputs, args.execution_id, deadline.left())
    except KafkaUnavailable as exc:
        return kafka_away(exc, deadline)
    except CommandRejected as exc:
        return fail(str(exc))
    except TimeoutError:
        return fail(f"no result within {deadline.seconds:g} s")
    print(
        orjson.dumps(
            {
                "execution_id": result.execution_id,
                "status": result.status,
                "output": result.output,
                "error": result.error,
            }
        ).decode()
    )
    return 0 if result.status == "completed" else 1
