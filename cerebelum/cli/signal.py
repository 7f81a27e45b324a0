"""`cerebelum signal ID NAME [--payload JSON]` and `cerebelum cancel ID [--reason TEXT]`.

Refused at once, before anything is produced: an id or signal name outside the id alphabet
(exit 2); an execution PostgreSQL shows as ended, or one it does not have once the mirror has
caught up on its partition (exit 1). Kafka away: one line on stderr, exit 1, within --timeout.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable

import orjson

from cerebelum.cli._commands import (
    DEFAULT_TIMEOUT_S,
    EXIT_USAGE,
    Deadline,
    bad_ids,
    check_signal_or_cancel,
    fail,
    kafka_away,
    quiet,
    refused,
    run_command,
)
from cerebelum.client import Client
from cerebelum.config import Settings
from cerebelum.errors import KafkaUnavailable


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser(
        "signal",
        help="send a signal (an approval, any external event) to an execution",
        description="Produce a SendSignal command to cerebelum.commands. A signal that arrives "
        "before the execution waits for it is kept until it does. A signal for an execution "
        "that has ended, or that does not exist, is refused.",
    )
    s.add_argument("execution_id")
    s.add_argument("name", help="the signal's name, e.g. approval")
    s.add_argument("--payload", default="null", help="the payload, as JSON (default null)")
    _timeout(s)
    s.set_defaults(func=run_signal)
    c = sub.add_parser(
        "cancel",
        help="cancel an execution",
        description="Produce a CancelExecution command: the execution records the reason, runs "
        "no further step, and its timers are dropped. An execution that has ended, or that "
        "does not exist, is refused.",
    )
    c.add_argument("execution_id")
    c.add_argument("--reason", default="cancelled from the CLI")
    _timeout(c)
    c.set_defaults(func=run_cancel)


def _timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"give up after this many seconds (default {DEFAULT_TIMEOUT_S:g})",
    )


def run_signal(args: argparse.Namespace) -> int:
    quiet(args)
    code = bad_ids((args.execution_id, "execution_id"), (args.name, "signal"))
    if code is not None:
        return code
    try:
        payload = orjson.loads(args.payload)
    except orjson.JSONDecodeError as exc:
        return fail(f"--payload is not valid JSON: {exc}", EXIT_USAGE)
    code = run_command(
        _send(args, lambda client: client.signal(args.execution_id, args.name, payload))
    )
    if code == 0:
        print(f"signal {args.name!r} sent to {args.execution_id}")
    return code


def run_cancel(args: argparse.Namespace) -> int:
    quiet(args)
    code = bad_ids((args.execution_id, "execution_id"))
    if code is not None:
        return code
    code = run_command(_send(args, lambda client: client.cancel(args.execution_id, args.reason)))
    if code == 0:
        print(f"cancel sent to {args.execution_id}")
    return code


async def _send(args: argparse.Namespace, send: Callable[[Client], Awaitable[None]]) -> int:
    settings = Settings.from_env()
    deadline = Deadline(args.timeout)
    refusal = await check_signal_or_cancel(settings, args.execution_id, deadline)
    if refusal is not None:
        return refused(refusal)
    try:
        async with Client(settings, timeout=deadline.left()) as client:
            await send(client)
    except KafkaUnavailable as exc:
        return kafka_away(exc, deadline)
    return 0
