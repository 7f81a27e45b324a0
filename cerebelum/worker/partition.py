"""PartitionOwner: the decide -> one transaction -> effects loop for one owned partition.

Inputs are commands fetched from cerebelum.commands[p] and step outcomes reported by this
worker's step runner. Each turn of the loop (group commit):

1. take every input queued so far (inputs queue up while the previous transaction commits,
   so batches grow under load and latency stays one commit under light load);
2. decide each against the partition's in-memory executions;
3. in one Kafka transaction: append the events to cerebelum.events[p], the changed snapshots
   to cerebelum.state[p], bad commands to cerebelum.dlq, and the input offsets;
4. after the commit, and only then, carry out the effects (run steps, arm timers).

Durable timers live in the state (so they survive restarts); the owner keeps the pending ones
in a heap and feeds TimerDue inputs into its own loop when they come due. A sleeping
execution costs a heap entry and its state, no task and no CPU.

If the broker fences the transaction, another worker owns p now: the owner stops without
writing anything more. Any other failure aborts and asks the worker to restore p afresh.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.structs import ConsumerRecord

from cerebelum.constants import (
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE_OFFSET,
    HEADER_DLQ_SOURCE_PARTITION,
    HEADER_DLQ_SOURCE_TOPIC,
    HEADER_STATE_RECOVERY,
    TOPIC_COMMANDS,
    TOPIC_DLQ,
    TOPIC_EVENTS,
    TOPIC_STATE,
    WORKER_GROUP,
)
from cerebelum.core.commands import FailExecution, Recover, StepOutcome, TimerDue, parse_command
from cerebelum.core.machine import ArmTimer, Effect, RunStep, decide
from cerebelum.core.state import Execution
from cerebelum.core.workflow import Registry
from cerebelum.errors import InvalidCommand
from cerebelum.worker.restore import RUNNING, RestoredPartition, recovery_header
from cerebelum.worker.runner import StepRunner

log = logging.getLogger(__name__)

# A live execution's snapshot (inputs + every result so far) larger than this fails the
# execution: the topics accept records up to 4 MiB (topics/topics.json), and restore time and
# memory grow with it. Each input and result is capped at 256 KiB on its own.
MAX_SNAPSHOT_BYTES = 2 * 1024 * 1024

# Inputs decided in one transaction at most: bounds the transaction's size and the time one
# partition holds the event loop between awaits.
MAX_BATCH = 5_000

Input: TypeAlias = ConsumerRecord | StepOutcome | TimerDue | Recover


class PartitionOwner:
    def __init__(
        self,
        partition: int,
        producer: AIOKafkaProducer,
        restored: RestoredPartition,
        registry: Registry,
        runner: StepRunner,
        on_broken: Callable[[int, bool], None],
        commit_slots: asyncio.Semaphore,
    ) -> None:
        self.partition = partition
        self.input_tp = TopicPartition(TOPIC_COMMANDS, partition)
        self.producer = producer
        # Execution id -> its state; parked ones stay encoded until an input touches them.
        self.executions: dict[str, Execution | bytes] = restored.executions
        self._restored_timers = restored.timers
        self._restored_running = restored.running
        self.registry = registry
        self.runner = runner
        self._on_broken = on_broken
        self._commit_slots = commit_slots
        self._inbox: deque[Input] = deque()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self._timers: list[tuple[int, str, str]] = []  # heap of (fire_at, execution_id, timer_id)
        self._timers_changed = asyncio.Event()
        self.transactions = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Recover every live execution (re-run unrecorded steps, re-arm timers), then loop."""
        self._timers = self._restored_timers
        heapq.heapify(self._timers)
        self._inbox.extend(Recover(eid) for eid in self._restored_running)
        self._restored_timers, self._restored_running = [], []
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._loop(), name=f"partition-{self.partition}")
        self._timer_task = loop.create_task(self._fire_timers(), name=f"timers-{self.partition}")
        self._wakeup.set()

    async def stop(self) -> None:
        """Finish the transaction in flight, write nothing more, close the producer."""
        self._stopping = True
        self._wakeup.set()
        if self._timer_task is not None:
            self._timer_task.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self.producer.stop()

    # -- inputs ----------------------------------------------------------------------------

    def feed(self, records: list[ConsumerRecord]) -> None:
        self._inbox.extend(records)
        self._wakeup.set()

    def report(self, outcome: StepOutcome) -> None:
        if self._stopping:
            return  # the partition moved on; its new owner re-runs the step
        self._inbox.append(outcome)
        self._wakeup.set()

    @property
    def backlog(self) -> int:
        return len(self._inbox)

    def _load(self, execution_id: str) -> Execution | None:
        """The execution's state, decoding a restored snapshot on first use."""
        ex = self.executions.get(execution_id)
        if ex is None or isinstance(ex, Execution):
            return ex
        state = Execution.from_record(orjson.loads(ex))
        self.executions[execution_id] = state
        return state

    # -- timers ----------------------------------------------------------------------------

    def _arm(self, timer: ArmTimer) -> None:
        heapq.heappush(self._timers, (timer.fire_at, timer.execution_id, timer.timer_id))
        if self._timers[0][2] == timer.timer_id:
            self._timers_changed.set()  # a new earliest timer: the sleeper must wake sooner

    async def _fire_timers(self) -> None:
        while True:
            self._timers_changed.clear()
            if not self._timers:
                await self._timers_changed.wait()
                continue
            delay = self._timers[0][0] / 1000 - time.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._timers_changed.wait(), delay)
                except TimeoutError:
                    pass
                continue
            now_ms = int(time.time() * 1000)
            while self._timers and self._timers[0][0] <= now_ms:
                _, execution_id, timer_id = heapq.heappop(self._timers)
                self._inbox.append(TimerDue(execution_id, timer_id))
            self._wakeup.set()

    # -- the loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._stopping:
                return
            while self._inbox and not self._stopping:
                try:
                    # Group commit across partitions: while this partition waits for a
                    # transaction slot its inputs keep queueing, so under load each
                    # transaction carries more and the broker handles fewer of them.
                    async with self._commit_slots:
                        if self._stopping:
                            return
                        n = min(len(self._inbox), MAX_BATCH)
                        batch = [self._inbox.popleft() for _ in range(n)]
                        await self._process(batch)
                except ProducerFenced:
                    log.warning(
                        "partition %d: fenced by a newer owner; dropping it", self.partition
                    )
                    self._stopping = True
                    self._on_broken(self.partition, True)
                    return
                except KafkaError:
                    log.exception("partition %d: transaction failed; restoring", self.partition)
                    self._stopping = True
                    await self._abort_quietly()
                    self._on_broken(self.partition, False)
                    return

    async def _process(self, batch: list[Input]) -> None:
        now = int(time.time() * 1000)
        events: list[dict[str, Any]] = []
        changed: dict[str, Execution] = {}
        effects: list[Effect] = []
        rejected: list[tuple[ConsumerRecord, str]] = []
        last_offset = -1
        for item in batch:
            if isinstance(item, ConsumerRecord):
                last_offset = item.offset
                try:
                    command: Any = parse_command(item.value)
                except InvalidCommand as exc:
                    rejected.append((item, exc.reason))
                    continue
            else:
                command = item
            current = self._load(command.execution_id)
            try:
                state, new_events, new_effects = decide(current, command, now, self.registry)
            except InvalidCommand as exc:
                if isinstance(item, ConsumerRecord):
                    rejected.append((item, exc.reason))
                continue
            except Exception as exc:  # a bug must cost one command, never the partition
                log.exception("partition %d: decide failed", self.partition)
                if isinstance(item, ConsumerRecord):
                    rejected.append((item, f"internal error: {type(exc).__name__}: {exc}"))
                continue
            if new_events and state is not None:
                self.executions[state.id] = state
                changed[state.id] = state
                events.extend(new_events)
            effects.extend(new_effects)  # a Recover has effects and no events
        snapshots = self._snapshots(changed, events, now)
        if events or rejected or last_offset >= 0:
            await self._commit(events, snapshots, rejected, last_offset)
            for key, value, recovery in snapshots:
                if recovery[:1] != RUNNING:
                    # Finished or parked (sleeping, waiting for a signal or a retry): keep the
                    # encoded snapshot until an input needs it. Copied: orjson's bytes keep
                    # their ~8 KB write buffer allocated behind them (measured: 4,097 -> 131 B).
                    self.executions[key.decode()] = bytes(memoryview(value))
        self._carry_out(effects)

    def _snapshots(
        self, changed: dict[str, Execution], events: list[dict[str, Any]], now: int
    ) -> list[tuple[bytes, bytes, bytes]]:
        """Encode the changed executions' snapshots (key, value, recovery header); fail those
        that grew too large."""
        out = []
        for ex in changed.values():
            value = orjson.dumps(ex.snapshot())
            if len(value) > MAX_SNAPSHOT_BYTES:
                too_big = FailExecution(
                    ex.id,
                    "LimitExceeded",
                    f"execution state is {len(value)} bytes, over the limit of "
                    f"{MAX_SNAPSHOT_BYTES}: keep step results small (store blobs elsewhere)",
                )
                state, new_events, _ = decide(ex, too_big, now, self.registry)
                assert state is not None
                events.extend(new_events)
                value = orjson.dumps(state.snapshot())
            out.append((ex.id.encode(), value, recovery_header(ex)))
        return out

    async def _commit(
        self,
        events: list[dict[str, Any]],
        snapshots: list[tuple[bytes, bytes, bytes]],
        rejected: list[tuple[ConsumerRecord, str]],
        last_offset: int,
    ) -> None:
        p = self.partition
        send = self.producer.send
        await self.producer.begin_transaction()
        dumps = orjson.dumps
        await self._send_batched(
            TOPIC_EVENTS, [(e["execution_id"].encode(), dumps(e), None) for e in events]
        )
        await self._send_batched(TOPIC_STATE, snapshots)
        for record, reason in rejected:
            log.warning(
                "partition %d offset %d: command sent to %s: %s",
                p,
                record.offset,
                TOPIC_DLQ,
                reason,
            )
            delivery = await send(
                TOPIC_DLQ,
                record.value if record.value is not None else b"",
                record.key,
                partition=p,
                headers=[
                    (HEADER_DLQ_REASON, reason.encode()),
                    (HEADER_DLQ_SOURCE_TOPIC, record.topic.encode()),
                    (HEADER_DLQ_SOURCE_PARTITION, str(record.partition).encode()),
                    (HEADER_DLQ_SOURCE_OFFSET, str(record.offset).encode()),
                ],
            )
            delivery.add_done_callback(_retrieve)
        if last_offset >= 0:
            await self.producer.send_offsets_to_transaction(
                {self.input_tp: last_offset + 1}, WORKER_GROUP
            )
        await self.producer.commit_transaction()
        self.transactions += 1

    async def _send_batched(
        self, topic: str, records: Sequence[tuple[bytes, bytes, bytes | None]]
    ) -> None:
        """Append records to record batches ourselves: one accumulator entry per batch instead
        of a send() (a future, a metadata check, a partitioner call) per record."""
        if not records:
            return
        batch = self.producer.create_batch()
        for key, value, recovery in records:
            headers = [] if recovery is None else [(HEADER_STATE_RECOVERY, recovery)]
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                sent = await self.producer.send_batch(batch, topic, partition=self.partition)
                sent.add_done_callback(_retrieve)
                batch = self.producer.create_batch()  # the full batch is on its way
                batch.append(key=key, value=value, timestamp=None, headers=headers)
        sent = await self.producer.send_batch(batch, topic, partition=self.partition)
        sent.add_done_callback(_retrieve)

    def _carry_out(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, RunStep):
                self.runner.submit(effect, self.report)
            else:
                self._arm(effect)

    async def _abort_quietly(self) -> None:
        try:
            await self.producer.abort_transaction()
        except Exception:  # the producer may be unusable; the restore replaces it anyway
            log.debug("partition %d: abort failed", self.partition, exc_info=True)


def _retrieve(delivery: asyncio.Future[Any]) -> None:
    """Mark a delivery's error as seen: commit_transaction reports it (e.g. ProducerFenced),
    and asyncio would otherwise log every failed batch as "exception never retrieved"."""
    if not delivery.cancelled():
        delivery.exception()
