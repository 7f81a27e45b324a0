"""PartitionState: what a worker holds for one partition it owns. No Kafka, no asyncio.

The executions of the partition, in one of two forms: a parked or finished execution stays as
its encoded snapshot (bytes, as restored or as last committed) until an input needs it; a
running one is kept decoded. Beside them, where the partition's input stands:

- `committed`: the offset of the next command to read, as committed in the last transaction
  that wrote for this partition (every such transaction commits it, changed or not, so the
  group's generation check covers every partition a transaction writes for);
- `next_offset`: the next command offset to accept. The consumer may hand over a command twice
  (a seek after a take-over re-fetches what was already queued); one below `next_offset` has
  been taken already and is dropped.

`released` is set when the partition moves away: inputs, outcomes and timers that still name
this object are then dropped (the new owner has its own, restored from the log).
"""

from __future__ import annotations

import orjson

from cerebelum.core.state import Execution
from cerebelum.worker.restore import RestoredPartition


class PartitionState:
    __slots__ = ("partition", "executions", "committed", "next_offset", "released", "backlog")

    def __init__(self, partition: int, restored: RestoredPartition, committed: int) -> None:
        self.partition = partition
        # Execution id -> its state (decoded) or its last committed snapshot (encoded).
        self.executions: dict[str, Execution | bytes] = restored.executions
        self.committed = committed
        self.next_offset = committed
        self.released = False
        self.backlog = 0  # inputs of this partition queued and not yet decided

    def load(self, execution_id: str) -> Execution | None:
        """The execution's committed state, decoding a snapshot on first use."""
        ex = self.executions.get(execution_id)
        if ex is None or isinstance(ex, Execution):
            return ex
        state = Execution.from_record(orjson.loads(ex))
        self.executions[execution_id] = state
        return state

    def accept(self, offset: int) -> bool:
        """True for a command not taken before (in offset order); moves `next_offset` past it."""
        if offset < self.next_offset:
            return False
        self.next_offset = offset + 1
        return True

    def __repr__(self) -> str:
        state = "released" if self.released else f"{len(self.executions)} executions"
        return f"PartitionState({self.partition}, {state}, committed={self.committed})"
