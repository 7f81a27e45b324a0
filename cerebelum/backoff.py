"""Retrying with exponential backoff, and waiting for a service that is not there yet.

    pool = await until_ready("PostgreSQL", connect, retry_on=is_transient, stopping=stop_event)

A process started before its broker or database (a reboot, `docker compose up`, a failover)
waits for them: one log line per attempt, never a traceback, and it gives up only when asked to
stop (`stopping` set, e.g. by SIGTERM), in which case `until_ready` returns None.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

# The first retry comes soon (a service restarting is back within a second or two); doubling
# reaches the cap in five steps; 5 s between attempts keeps a long outage to a line every 5 s
# while noticing the service's return within 5 s.
FIRST_DELAY_S = 0.2
MAX_DELAY_S = 5.0


class Backoff:
    """Delays that double from `first` up to `maximum`; `reset()` after a success."""

    def __init__(self, first: float = FIRST_DELAY_S, maximum: float = MAX_DELAY_S) -> None:
        self.first = first
        self.maximum = maximum
        self.attempts = 0
        self._next = first

    def next_delay(self) -> float:
        """The delay before the next attempt (and count the failed one)."""
        delay = self._next
        self.attempts += 1
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.attempts = 0
        self._next = self.first


async def sleep_unless_stopping(delay: float, stopping: asyncio.Event | None) -> bool:
    """Sleep `delay` seconds, or less if `stopping` is set meanwhile. True if it was set."""
    if stopping is None:
        await asyncio.sleep(delay)
        return False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), delay)
    return stopping.is_set()


async def until_ready(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    retry_on: Callable[[BaseException], bool],
    stopping: asyncio.Event | None = None,
    logger: logging.Logger = log,
    backoff: Backoff | None = None,
    quiet: tuple[str, ...] = (),
) -> T | None:
    """Call `attempt` until it succeeds; None if `stopping` is set first.

    An exception for which `retry_on` is true is logged as one line and retried after the next
    backoff delay; any other propagates. `quiet` names loggers (a client library's: records
    logged on exactly that name) silenced during attempts, so each attempt is one line: ours.
    """
    backoff = backoff or Backoff()
    while stopping is None or not stopping.is_set():
        try:
            with _silenced(quiet):
                return await attempt()
        except Exception as exc:
            if not retry_on(exc):
                raise
            delay = backoff.next_delay()
            logger.warning(
                "%s not reachable (%s); retrying in %.1f s (attempt %d)",
                what, _one_line(exc), delay, backoff.attempts,
            )  # fmt: skip
        if await sleep_unless_stopping(delay, stopping):
            break
    return None


def _one_line(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc).strip().splitlines()
    if not text:
        return name
    return text[0] if text[0].startswith(name) else f"{name}: {text[0]}"


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def _silenced(names: tuple[str, ...]) -> Iterator[None]:
    # A filter of our own (not a level change), so overlapping attempts cannot undo each other.
    drop = _DropAll()
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)
