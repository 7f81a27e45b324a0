"""Starting and stopping aiokafka clients safely when a start is cut short.

aiokafka 0.14 leaks the connection it bootstraps through when `start()` is cancelled midway (a
timeout, a shutdown): that connection is not yet registered with the client, so `stop()` cannot
close it. `start_or_stop` never cancels a start; it abandons it and stops the client once the
start has ended on its own (bounded by the client's request timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

# Abandoned starts, and the stops that follow them, still running: referenced so the loop
# does not drop them, and so a short-lived process can let them end (`settle`).
_retiring: set[asyncio.Future[Any]] = set()


async def start_or_stop(client: Any) -> None:
    """`await client.start()`; if it fails or is cancelled, the client ends up stopped."""
    start = asyncio.ensure_future(client.start())
    try:
        await asyncio.shield(start)
    except BaseException:
        if start.done():
            await stop_quietly(client)
        else:  # cancelled while starting: stop once the start has ended
            _retiring.add(start)
            start.add_done_callback(lambda _: _retire(start, client))
        raise


def _retire(start: asyncio.Future[Any], client: Any) -> None:
    _retiring.discard(start)
    if not start.cancelled():
        start.exception()  # retrieved: the caller has already been told why it gave up
    stop = asyncio.ensure_future(stop_quietly(client))
    _retiring.add(stop)
    stop.add_done_callback(_retiring.discard)


async def settle(timeout: float) -> None:
    """Let abandoned starts end and their clients stop, for at most `timeout` seconds: a
    process about to exit calls it so it does not leave clients unclosed."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while _retiring:
                await asyncio.wait(list(_retiring))


async def stop_quietly(client: Any) -> None:
    """Stop a client (producer, consumer: `stop()`; admin client: `close()`) that failed to
    start, without masking the original error."""
    stop = getattr(client, "stop", None) or client.close
    with contextlib.suppress(Exception):
        await stop()
