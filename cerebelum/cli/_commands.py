"""What `start`, `signal`, `cancel` and `status` share: how they fail, and their checks.

They are commands a person types, so each failure is one line on stderr and an exit code, never
a traceback: 2 for a usage mistake (an id or name outside the id alphabet, JSON that does not
parse), 1 for everything else (Kafka away, a refused command, no result in time).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from cerebelum._aiokafka import settle
from cerebelum.admin.dead_letters import refused_starts
from cerebelum.admin.preflight import CHECK_TIMEOUT_S, PartitionProbe, Refusal, check_target
from cerebelum.client import Client
from cerebelum.config import Settings
from cerebelum.core.ids import id_problem
from cerebelum.db import connect_pool
from cerebelum.errors import KafkaRefused, KafkaUnavailable

# Reaching Kafka and its acknowledgement: a healthy broker answers in milliseconds, a person
# should hear within a quarter of a minute that it does not (the Client's own default).
DEFAULT_TIMEOUT_S = 15.0
EXIT_FAILED = 1
EXIT_USAGE = 2


# Kafka clients whose start was cut short by a timeout are stopped once the start ends; an
# exiting command lets them, for this long at most.
SETTLE_S = 1.0


def quiet(args: argparse.Namespace) -> None:
    """Only our one line on stderr: no INFO logs, none of aiokafka's connection errors (it logs
    each refused connection at ERROR) and no asyncio reports of clients left unclosed at exit
    (a start abandoned at the deadline) unless --verbose."""
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def run_command(main: Coroutine[Any, Any, int]) -> int:
    """asyncio.run(main), then let Kafka clients abandoned mid-start stop (SETTLE_S at most)."""

    async def then_settle() -> int:
        try:
            return await main
        finally:
            await settle(SETTLE_S)

    return asyncio.run(then_settle())


def fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever it holds
    return code


async def not_found(pool: asyncpg.Pool, execution_id: str) -> int:
    """One line for an execution PostgreSQL has no row for: its start's fate if the workers
    refused it (dead-lettered), else that it is not there (yet)."""
    refusal = (await refused_starts(pool, [execution_id])).get(execution_id)
    if refusal is None:
        return fail(f"no execution {execution_id!r} (yet: the mirror may lag)")
    return fail(f"execution {execution_id!r}: its start was refused: {refusal['reason']} "
                f"(dead letter {refusal['dead_letter_id']}: cerebelum dlq show|replay "
                f"{refusal['dead_letter_id']})")  # fmt: skip


def kafka_away(exc: KafkaUnavailable, deadline: Deadline) -> int:
    """One line for Kafka away, naming the command's whole bound (the part left for Kafka
    after the checks is less)."""
    if isinstance(exc, KafkaRefused):  # not a matter of time: say why
        return fail(str(exc))
    return fail(str(KafkaUnavailable(exc.bootstrap, deadline.seconds, exc.doing, exc.cause)))


def bad_ids(*named: tuple[str | None, str]) -> int | None:
    """Exit code 2 (after one line) for the first (value, what) outside the id alphabet."""
    for value, what in named:
        if value is not None and (problem := id_problem(value, what)) is not None:
            return fail(problem, EXIT_USAGE)
    return None


def refused(refusal: Refusal) -> int:
    message = refusal.message
    if "workflows" in refusal.details:
        message += f" (live workers run: {', '.join(refusal.details['workflows']) or 'none'})"
    return fail(message)


class Deadline:
    """One bound for a whole command, shared by its steps."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self, at_most: float | None = None) -> float:
        left = max(0.1, self._end - time.monotonic())
        return left if at_most is None else min(left, at_most)


async def check_signal_or_cancel(
    settings: Settings, execution_id: str, deadline: Deadline
) -> Refusal | None:
    """Refuse a signal or cancel PostgreSQL shows cannot succeed; accept if it cannot tell."""
    timeout = deadline.left(at_most=min(CHECK_TIMEOUT_S, deadline.seconds / 2))
    try:
        async with asyncio.timeout(timeout), _pool(settings) as pool:
            probe = PartitionProbe(settings)
            try:
                return await check_target(pool, probe, execution_id, timeout)
            finally:
                await probe.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        logging.getLogger(__name__).info("cannot check %s (%r); sending", execution_id, exc)
        return None


@asynccontextmanager
async def _pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await connect_pool(settings.namespace_database_url, min_size=1, max_size=1)
    try:
        yield pool
    finally:
        await pool.close()


def add_timeout(parser: argparse.ArgumentParser) -> None:
    """The --timeout every command that produces to Kafka takes."""
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S,
        help=f"give up after this many seconds (default {DEFAULT_TIMEOUT_S:g})",
    )  # fmt: skip


async def send_to(
    args: argparse.Namespace, send: Callable[[Client], Awaitable[None]], check: bool = True
) -> int:
    """Produce a command with a Client within --timeout; first (`check`) refuse one that
    PostgreSQL shows cannot succeed for args.execution_id (ended, or never existed)."""
    settings = Settings.from_env()
    deadline = Deadline(args.timeout)
    if check:
        refusal = await check_signal_or_cancel(settings, args.execution_id, deadline)
        if refusal is not None:
            return refused(refusal)
    try:
        async with Client(settings, timeout=deadline.left()) as client:
            await send(client)
    except KafkaUnavailable as exc:
        return kafka_away(exc, deadline)
    return 0
