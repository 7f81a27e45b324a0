"""`cerebelum start WORKFLOW --input JSON [--id ID] [--wait]`: produce a start-command."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson

from cerebelum.client import Client
from cerebelum.config import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "start",
        help="start an execution (produces a start-command to cerebelum.commands)",
        description="Produce a StartExecution command to cerebelum.commands, keyed by the "
        "execution id. With --wait, print the output once the execution ends.",
    )
    p.add_argument("workflow", help="workflow name")
    p.add_argument("--input", default="{}", help="the inputs, as JSON (default {})")
    p.add_argument("--id", dest="execution_id", help="execution id (default: a new UUID)")
    p.add_argument("--wait", action="store_true", help="wait for the execution to end")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds --wait waits")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        inputs = orjson.loads(args.input)
    except orjson.JSONDecodeError as exc:
        print(f"error: --input is not valid JSON: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_start(args, inputs))


async def _start(args: argparse.Namespace, inputs: object) -> int:
    async with Client(Settings.from_env()) as client:
        if not args.wait:
            execution_id = await client.start(args.workflow, inputs, args.execution_id)
            print(execution_id)
            return 0
        try:
            result = await client.run(args.workflow, inputs, args.execution_id, args.timeout)
        except TimeoutError:
            print(f"error: no result within {args.timeout}s", file=sys.stderr)
            return 1
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
