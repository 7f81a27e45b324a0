"""The worker process: one member of the consumer group over cerebelum.commands.

The group's rebalance decides which partitions this worker owns. For each owned partition the
worker runs a PartitionOwner; on assignment it:

1. pauses the partition's input (nothing is decided before its state is back);
2. starts the partition's transactional producer (init_transactions fences any previous owner
   and aborts its open transaction, so the state read next is final);
3. restores the partition's executions from cerebelum.state;
4. starts the owner, which re-dispatches steps that were scheduled but not recorded;
5. resumes the input.

On revocation it stops the owners (each finishes or aborts its transaction in flight) before
the rebalance completes, so it never writes for a partition it no longer owns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Iterable

import aiokafka.producer.sender
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from cerebelum.config import Settings
from cerebelum.constants import TOPIC_COMMANDS, WORKER_GROUP, transactional_id
from cerebelum.core.workflow import Registry
from cerebelum.worker.partition import PartitionOwner
from cerebelum.worker.ranges import format_ranges
from cerebelum.worker.restore import restore_partitions
from cerebelum.worker.runner import StepRunner

log = logging.getLogger(__name__)

# A transaction begun right after the previous commit gets CONCURRENT_TRANSACTIONS from the
# coordinator until that commit's markers are written (~1-3 ms); aiokafka then waits a fixed
# 20 ms (KAFKA-5477), which made every step of an idle execution cost 20 ms. Retry after 2 ms.
aiokafka.producer.sender.BACKOFF_OVERRIDE = 0.002

# A partition whose queued inputs pass this is paused until its owner catches up: bounds memory
# when the input arrives faster than transactions commit (64 partitions x 2,000 records at most).
MAX_BACKLOG = 2_000


class Worker:
    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.owners: dict[int, PartitionOwner] = {}
        self.runner = StepRunner(settings.max_concurrent_steps)
        self._commit_slots = asyncio.Semaphore(settings.max_concurrent_transactions)
        self._setups: set[asyncio.Task[None]] = set()
        self._fetch_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.fatal = asyncio.Event()
        self.failed: BaseException | None = None
        # Shown by the group's description (GET /cluster, `cerebelum cluster`): who owns what.
        self.worker_id = settings.group_instance_id or f"{socket.gethostname()}:{os.getpid()}"
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=WORKER_GROUP,
            client_id=f"cerebelum-worker:{self.worker_id}",
            group_instance_id=settings.group_instance_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            # Revocation waits for in-flight transactions; give it the session timeout plus
            # margin so a slow commit does not get this member thrown out of the group.
            rebalance_timeout_ms=settings.session_timeout_ms + 20_000,
            # Short fetch waits keep single-execution latency low on an idle cluster.
            fetch_max_wait_ms=5,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.subscribe([TOPIC_COMMANDS], listener=_Listener(self))
        self._fetch_task = asyncio.get_running_loop().create_task(self._fetch_loop())
        self._fetch_task.add_done_callback(self._fetch_ended)
        log.info("worker started; workflows: %s", ", ".join(self.registry.names()))

    async def stop(self) -> None:
        """Graceful stop: take no more input, let running steps settle, commit, leave."""
        if self._fetch_task is not None:
            self._fetch_task.cancel()
            await asyncio.gather(self._fetch_task, return_exceptions=True)
        await self.runner.drain(self.settings.shutdown_grace_s)
        # Let the last step outcomes reach their transactions before the owners stop.
        await asyncio.sleep(0.1)
        await self._release(list(self.owners))
        self.runner.close()
        await self.consumer.stop()  # sends LeaveGroup (dynamic members): partitions move now
        self._stopped.set()
        log.info("worker stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def _fetch_ended(self, task: asyncio.Task[None]) -> None:
        """The input loop only ends on stop(); anything else (a fatal group error such as a
        session timeout the broker refuses) must end the process, not leave it idle."""
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("the worker's input loop failed: %r", error)
            self.failed = error
            self.fatal.set()

    # -- input -----------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        paused: set[int] = set()
        while True:
            batches = await self.consumer.getmany(timeout_ms=100, max_records=10_000)
            for tp, records in batches.items():
                owner = self.owners.get(tp.partition)
                if owner is not None and owner is not _PENDING:
                    owner.feed(records)
                    if owner.backlog > MAX_BACKLOG:
                        self.consumer.pause(tp)
                        paused.add(tp.partition)
            for p in list(paused):
                owner = self.owners.get(p)
                if owner is None or owner is _PENDING:
                    paused.discard(p)
                elif owner.backlog < MAX_BACKLOG // 2:
                    self.consumer.resume(TopicPartition(TOPIC_COMMANDS, p))
                    paused.discard(p)

    # -- ownership -------------------------------------------------------------------------

    async def _assign(self, partitions: list[int]) -> None:
        for p in partitions:
            self.consumer.pause(TopicPartition(TOPIC_COMMANDS, p))
            self.owners[p] = _PENDING
        task = asyncio.get_running_loop().create_task(self._take_over(partitions))
        self._setups.add(task)
        task.add_done_callback(self._setups.discard)

    async def _take_over(self, partitions: list[int]) -> None:
        while True:
            producers: list[AIOKafkaProducer] = []
            try:
                started = await asyncio.gather(
                    *(self._start_producer(p) for p in partitions), return_exceptions=True
                )
                producers = [p for p in started if isinstance(p, AIOKafkaProducer)]
                for result in started:
                    if isinstance(result, BaseException):
                        raise result
                states = await restore_partitions(self.settings.kafka_bootstrap, partitions)
                break
            except BaseException as exc:
                await asyncio.gather(*(p.stop() for p in producers), return_exceptions=True)
                if not isinstance(exc, Exception):
                    raise  # cancelled: the partitions were revoked meanwhile
                # The broker may be restarting or the coordinator moving: try again shortly.
                log.exception(
                    "taking over partitions %s failed; retrying", format_ranges(partitions)
                )
                await asyncio.sleep(1.0)
        for p, producer in zip(partitions, producers, strict=True):
            owner = PartitionOwner(
                p,
                producer,
                states[p],
                self.registry,
                self.runner,
                self._partition_broken,
                self._commit_slots,
            )
            self.owners[p] = owner
            owner.start()
            self.consumer.resume(TopicPartition(TOPIC_COMMANDS, p))
        log.info("owning partitions %s", format_ranges(sorted(self.owners)))

    async def _start_producer(self, partition: int) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            transactional_id=transactional_id(partition),
            enable_idempotence=True,
            acks="all",
            # No linger: a transaction's commit already waits for every send, batching them.
            linger_ms=0,
            # The partition loop builds its own record batches: 512 KiB holds a large
            # transaction's events while staying well under the topics' 4 MiB record limit.
            max_batch_size=512 * 1024,
            # A single snapshot may reach MAX_SNAPSHOT_BYTES (2 MiB): requests must carry it.
            max_request_size=4 * 1024 * 1024,
            # Retries here are transient coordinator races; 100 ms (the default) is a latency
            # spike for the whole partition.
            retry_backoff_ms=20,
        )
        await producer.start()  # init_transactions: fences the previous owner of `partition`
        return producer

    async def _release(self, partitions: Iterable[int]) -> None:
        setups = list(self._setups)
        for task in setups:
            task.cancel()
        await asyncio.gather(*setups, return_exceptions=True)
        owners = [self.owners.pop(p) for p in list(partitions) if p in self.owners]
        await asyncio.gather(*(o.stop() for o in owners if o is not _PENDING))

    def _partition_broken(self, partition: int, fenced: bool) -> None:
        """An owner hit a failed or fenced transaction: drop it; restore unless fenced."""
        owner = self.owners.get(partition)

        async def reset() -> None:
            if owner is not None and owner is not _PENDING and self.owners.get(partition) is owner:
                del self.owners[partition]
                await owner.stop()
                tp = TopicPartition(TOPIC_COMMANDS, partition)
                if fenced or tp not in self.consumer.assignment():
                    return  # the group will hand it to its new owner; we wait for the rebalance
                committed = await self.consumer.committed(tp)
                self.consumer.seek(tp, committed or 0)
                await self._assign([partition])

        asyncio.get_running_loop().create_task(reset())


class _Pending:
    """Placeholder owner while a partition restores."""


_PENDING: PartitionOwner = _Pending()  # type: ignore[assignment]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        parts = [tp.partition for tp in revoked]
        if parts:
            log.info("revoked partitions %s", format_ranges(sorted(parts)))
        await self.worker._release(parts)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        parts = [tp.partition for tp in assigned]
        log.info("assigned partitions %s", format_ranges(sorted(parts)))
        await self.worker._assign(parts)
