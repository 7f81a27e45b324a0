"""Read your writes: wait until the mirror has an execution in the state asked for.

The mirror NOTIFYs its namespace's channel (`cerebelum_mirrored` in the default namespace) when
each batch commits (cerebelum.mirror.store). The API LISTENs on one connection of its own; on
each notification, and only while someone waits, it reads the rows of the executions waited on
(one query for all of them) and wakes the waiters whose condition holds. Nothing is polled
while that connection is up; while it is down (the database away, a restart) the waiters look
every FALLBACK_POLL_S instead, and the connection is made again.

Conditions (`until`): "visible" (the row exists), "terminal" (completed, failed or cancelled),
or one status by name ("waiting", "completed", ...).

Starts this API accepted are remembered for a while (RECENT_S): a GET of one that the mirror has
not written yet waits for it (up to a bound) instead of answering 404 right after a 202.

A wait also ends on the command's fate: a start the workers refused (dead-lettered, and mirrored
into `dead_letters`, which NOTIFYs the same channel) never makes a row, so an execution with no
row and a refused start (cerebelum.admin.dead_letters.refused_starts) is done waiting; the route
answers 410 `start_refused`. For a start this API accepted, refusals recorded before it (of an
earlier start with the same id) are not its fate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from cerebelum.admin.dead_letters import refused_starts
from cerebelum.core.state import STATUSES, TERMINAL

log = logging.getLogger(__name__)

VISIBLE, TERMINAL_UNTIL = "visible", "terminal"
UNTIL = (VISIBLE, TERMINAL_UNTIL, *sorted(STATUSES))
MAX_WAIT_S = 60.0
# A GET of a start this API acknowledged and the mirror has not written yet waits this long.
VISIBILITY_WAIT_S = 5.0
FALLBACK_POLL_S = 1.0
RECONNECT_S = 2.0
# Starts remembered, and for how long: a GET of one waits for the mirror instead of a 404.
RECENT_MAX = 100_000
RECENT_S = 600.0
MAX_WAITED = 10_000  # executions waited on at once; beyond, a wait is refused
# A dead letter's time is the worker's clock, a start's acknowledgement the API's: a refusal up
# to this much before the acknowledgement still counts as this start's (clocks on one network
# agree within it), while an earlier start's refusal is almost always older.
CLOCK_SLACK = timedelta(seconds=1)


def condition(until: str) -> Callable[[dict[str, Any] | None], bool]:
    """Whether a row (None: not mirrored yet) is what `until` asks for."""
    if until == VISIBLE:
        return lambda row: row is not None
    if until == TERMINAL_UNTIL:
        return lambda row: row is not None and row["status"] in TERMINAL
    return lambda row: row is not None and row["status"] == until


class TooManyWaiters(RuntimeError):
    pass


class MirrorWatch:
    def __init__(self, database_url: str, pool: asyncpg.Pool, channel: str) -> None:
        self.database_url = database_url
        self.channel = channel  # the namespace's (Names.mirrored_channel)
        self.pool = pool
        self._waiters: dict[str, list[tuple[Callable[[Any], bool], asyncio.Future[None]]]] = {}
        # execution id -> (monotonic, wall-clock) time its start was acknowledged
        self._recent: OrderedDict[str, tuple[float, datetime]] = OrderedDict()
        self._wake = asyncio.Event()

    # -- what the routes call ------------------------------------------------------------------

    def started(self, execution_id: str) -> None:
        """Remember a start this API had acknowledged."""
        self._recent.pop(execution_id, None)
        self._recent[execution_id] = (time.monotonic(), datetime.now(UTC))
        while len(self._recent) > RECENT_MAX:
            self._recent.popitem(last=False)

    def recently_started(self, execution_id: str) -> bool:
        at = self._recent.get(execution_id)
        return at is not None and time.monotonic() - at[0] < RECENT_S

    async def refused_start(self, execution_id: str) -> dict[str, Any] | None:
        """The dead letter of this execution's refused start (see the module's docstring), if
        its start was refused and it has no row: {"dead_letter_id", "reason", "at"}."""
        return (await self._refusals([execution_id])).get(execution_id)

    async def wait(self, execution_id: str, until: str, timeout: float) -> bool:
        """True once the execution's row meets `until`, or it has no row and its start was
        refused (the caller reads which); False after `timeout` seconds."""
        if sum(map(len, self._waiters.values())) >= MAX_WAITED:
            raise TooManyWaiters(f"over {MAX_WAITED} reads are waiting already")
        check = condition(until)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (check, future)
        self._waiters.setdefault(execution_id, []).append(entry)
        try:
            row = await self._row(execution_id)  # after registering: no notify is missed
            if check(row) or (row is None and await self.refused_start(execution_id)):
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, timeout)
                return True
            return False
        finally:
            entries = self._waiters.get(execution_id, [])
            if entry in entries:
                entries.remove(entry)
            if not entries:
                self._waiters.pop(execution_id, None)

    # -- the background task -------------------------------------------------------------------

    async def run(self) -> None:
        """LISTEN (again after any loss) and wake waiters on every notification; poll only
        while the listening connection is down."""
        checker = asyncio.create_task(self._check_on_wake())
        try:
            while True:
                try:
                    conn = await asyncpg.connect(self.database_url, timeout=10)
                except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                    log.warning("api: cannot LISTEN for the mirror (%r); polling meanwhile", exc)
                    await self._poll_for(RECONNECT_S)
                    continue
                try:
                    await conn.add_listener(self.channel, self._notified)
                    self._wake.set()  # what changed while not listening
                    while not conn.is_closed():
                        await asyncio.sleep(RECONNECT_S)
                finally:
                    with contextlib.suppress(Exception):
                        await conn.close()
        finally:
            checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checker

    def _notified(self, *_: object) -> None:
        if self._waiters:
            self._wake.set()

    async def _poll_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(FALLBACK_POLL_S)
            if self._waiters:
                self._wake.set()

    async def _check_on_wake(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            waited = list(self._waiters)
            if not waited:
                continue
            try:
                rows = await self.pool.fetch(
                    "SELECT execution_id, status, last_version FROM executions "
                    "WHERE execution_id = ANY($1::text[])",
                    waited,
                )
                found = {r["execution_id"]: dict(r) for r in rows}
                missing = [execution_id for execution_id in waited if execution_id not in found]
                refused = await self._refusals(missing) if missing else {}
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.debug("api: reading waited executions failed: %r", exc)
                continue  # the fallback poll or the next notification tries again
            for execution_id in waited:
                for check, future in self._waiters.get(execution_id, []):
                    done = check(found.get(execution_id)) or execution_id in refused
                    if not future.done() and done:
                        future.set_result(None)

    async def _refusals(self, execution_ids: list[str]) -> dict[str, dict[str, Any]]:
        since = {}
        for execution_id in execution_ids:
            at = self._recent.get(execution_id)
            if at is not None:
                since[execution_id] = at[1] - CLOCK_SLACK
        return await refused_starts(self.pool, execution_ids, since)

    async def _row(self, execution_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            "SELECT execution_id, status, last_version FROM executions WHERE execution_id = $1",
            execution_id,
        )
        return None if row is None else dict(row)
