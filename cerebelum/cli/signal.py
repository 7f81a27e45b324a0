"""`cerebelum signal ID NAME [--payload JSON]` and `cerebelum cancel ID [--reason TEXT]`."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson

from cerebelum.client import Client
from cerebelum.config import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser(
        "signal",
        help="send a signal (an approval, any external event) to an execution",
        description="Produce a SendSignal command to cerebelum.commands. A signal that arrives "
        "before the execution waits for it is kept until it does.",
    )
    s.add_argument("execution_id")
    s.add_argument("name", help="the signal's name, e.g. approval")
    s.add_argument("--payload", default="null", help="the payload, as JSON (default null)")
    s.set_defaults(func=run_signal)
    c = sub.add_parser(
        "cancel",
        help="cancel an execution",
        description="Produce a CancelExecution command: the execution records the reason, runs "
        "no further step, and its timers are dropped.",
    )
    c.add_argument("execution_id")
    c.add_argument("--reason", default="cancelled from the CLI")
    c.set_defaults(func=run_cancel)


def run_signal(args: argparse.Namespace) -> int:
    try:
        payload = orjson.loads(args.payload)
    except orjson.JSONDecodeError as exc:
        print(f"error: --payload is not valid JSON: {exc}", file=sys.stderr)
        return 2

    async def send() -> None:
        async with Client(Settings.from_env()) as client:
            await client.signal(args.execution_id, args.name, payload)

    asyncio.run(send())
    print(f"signal {args.name!r} sent to {args.execution_id}")
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    async def send() -> None:
        async with Client(Settings.from_env()) as client:
            await client.cancel(args.execution_id, args.reason)

    asyncio.run(send())
    print(f"cancel sent to {args.execution_id}")
    return 0
