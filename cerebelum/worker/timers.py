"""The worker's durable timers, in memory: one heap for every owned partition.

Timers are durable in the executions' state (and the state records' recovery header), so this
heap is only the schedule: it is refilled from the state on every take-over. When a timer comes
due it is handed to the worker as a TimerDue input for its partition. A sleeping execution
costs a heap entry, no task and no CPU. Entries of a partition that moved away are skipped.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable

from cerebelum.core.commands import TimerDue
from cerebelum.worker.partition import PartitionState

Due = Callable[[PartitionState, TimerDue], None]


class Timers:
    def __init__(self, due: Due) -> None:
        self._due = due
        # (fire_at ms, tie-breaker, partition, execution id, timer id)
        self._heap: list[tuple[int, int, PartitionState, str, str]] = []
        self._seq = itertools.count()
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._heap)

    def arm(self, ps: PartitionState, fire_at: int, execution_id: str, timer_id: str) -> None:
        entry = (fire_at, next(self._seq), ps, execution_id, timer_id)
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:
            self._changed.set()  # a new earliest timer: the sleeper must wake sooner

    def forget(self, ps: PartitionState) -> None:
        """Drop a released partition's entries (its new owner has its own)."""
        self._heap = [entry for entry in self._heap if entry[2] is not ps]
        heapq.heapify(self._heap)

    async def run(self) -> None:
        """Hand over timers as they come due, until cancelled."""
        while True:
            heap = self._heap
            self._changed.clear()
            if not heap:
                await self._changed.wait()
                continue
            delay = heap[0][0] / 1000 - time.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._changed.wait(), delay)
                except TimeoutError:
                    pass
                continue
            now_ms = int(time.time() * 1000)
            while heap and heap[0][0] <= now_ms:
                _, _, ps, execution_id, timer_id = heapq.heappop(heap)
                if not ps.released:
                    self._due(ps, TimerDue(execution_id, timer_id))
