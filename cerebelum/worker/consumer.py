"""The worker's membership in the group and its input: cerebelum.commands, in its own thread.

librdkafka's consumer blocks in consume() and calls the rebalance callbacks from inside it; and
confluent-kafka (2.16) serialises the calls on one consumer handle, so a call from another
thread waits until consume() returns, and can starve. So the consumer belongs to one thread,
which talks to the event loop:

- records go to the loop in batches (`call_soon_threadsafe`), as CommandRecords;
- the loop's requests (pause, resume, seek) are queued and served between two consume() calls,
  which therefore return every POLL_S;
- an assignment (incremental: only the partitions added) is assigned and paused at once,
  inside the callback, so nothing is fetched before the worker has restored the partitions;
  the loop is then told, restores them and resumes them;
- a revocation blocks the callback until the loop has released the partitions (the
  transaction in flight, which may write for them, has ended), so the partitions move only
  once this worker writes nothing more for them; a loss (the member was fenced: its session
  expired) releases them without waiting for anything;
- the group metadata that transactions carry (KIP-447) is read in this thread after every
  rebalance callback and on request, and kept for the producer's thread to use;
- the end offsets of the assigned partitions, as librdkafka last saw them in its fetch
  responses (no request to the broker), are copied every ENDS_REFRESH_S for the lag metric.

A second, unsubscribed consumer of the same group answers the blocking questions (committed
offsets, watermarks, topic metadata) from whichever thread asks, one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, Protocol, cast

from confluent_kafka import Consumer, KafkaException, TopicPartition

from cerebelum._librdkafka import take
from cerebelum.worker.batch import CommandRecord

log = logging.getLogger(__name__)

# How long one consume() call waits when there is nothing to read. It costs no latency for
# records (consume returns as soon as records arrive); it bounds how long the loop's requests
# (resume a restored partition, pause one that is behind) wait, at ten cheap wakeups a second.
POLL_S = 0.1
# A revocation waits this long for the loop to release the partitions; past it something is
# stuck and the partitions are let go anyway (a fenced commit cannot land after that).
RELEASE_TIMEOUT_S = 60.0
# How often the cached end offsets are copied out: a lag a few seconds old is fresh enough to
# watch, and 64 local look-ups every 5 s cost nothing.
ENDS_REFRESH_S = 5.0


class Ownership(Protocol):
    """What the event loop does when the group moves partitions or records arrive (the
    Worker). Each is called on the loop's thread."""

    def assigned(self, partitions: list[int]) -> None: ...

    def released(self, partitions: list[int], lost: bool) -> Awaitable[None]: ...

    def received(self, records: list[CommandRecord]) -> None: ...

    def consumer_failed(self, error: BaseException) -> None: ...


class CommandConsumer:
    def __init__(self, config: dict[str, Any], ownership: Ownership, topic: str) -> None:
        self._ownership = ownership
        self.topic = topic  # the namespace's commands topic
        self._consumer = Consumer(config)
        # Never subscribes: its committed() asks the group coordinator directly (with stable
        # offsets, as read_committed), without joining or touching the member's handle.
        questions = {k: v for k, v in config.items() if k not in _MEMBER_ONLY}
        self._questions = Consumer(questions)
        self._questions_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._requests: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._metadata: Any = None
        # Set (on the loop) by the first assignment callback, even an empty one: the member
        # has joined the group.
        self.joined = False
        # Partition -> its end offset, from librdkafka's cache (ENDS_REFRESH_S old at most).
        self.ends: dict[int, int] = {}

    # -- lifecycle (from the event loop) -----------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="cerebelum-consumer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Leave the group (the revocation callback releases every partition), then close."""
        self._stop.set()
        await asyncio.to_thread(self._closed.wait)
        with self._questions_lock:
            self._questions.close()

    # -- requests, served by the consumer's thread -------------------------------------------

    def pause(self, partitions: list[int]) -> None:
        self._requests.put(lambda: self._consumer.pause(self._tps(partitions)))

    def resume(self, partitions: list[int]) -> None:
        self._requests.put(lambda: self._consumer.resume(self._tps(partitions)))

    def seek(self, partition: int, offset: int) -> None:
        tp = TopicPartition(self.topic, partition, offset)
        self._requests.put(lambda: self._consumer.seek(tp))

    @property
    def group_metadata(self) -> Any:
        """The member's group metadata as last read (after each rebalance, or refresh())."""
        return self._metadata

    def refresh_metadata(self) -> Future[None]:
        """Read the group metadata again (its epoch may move without a rebalance of ours)."""
        done: Future[None] = Future()

        def read() -> None:
            self._read_metadata()
            done.set_result(None)

        self._requests.put(read)
        return done

    # -- questions, from any thread (they block) ---------------------------------------------

    def committed(self, partitions: list[int], timeout: float) -> dict[int, int]:
        """The group's committed offsets. Stable offsets: this waits while a transaction that
        commits offsets for these partitions is in flight. None committed: -1001."""
        with self._questions_lock:
            positions = self._questions.committed(self._tps(partitions), timeout)
        return {tp.partition: tp.offset for tp in positions}

    def watermarks(self, partition: int, timeout: float) -> tuple[int, int]:
        """The partition's first and next offsets."""
        with self._questions_lock:
            low, high = self._questions.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout
            )
        return low, high

    def partition_counts(self, topics: list[str], timeout: float) -> dict[str, int]:
        with self._questions_lock:
            metadata = self._questions.list_topics(timeout=timeout)
        return {t: len(metadata.topics[t].partitions) for t in topics if t in metadata.topics}

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        consumer = self._consumer
        try:
            consumer.subscribe(
                [self.topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self._read_metadata()
            next_ends = 0.0
            while not self._stop.is_set():
                self._serve_requests()
                messages = take(consumer, POLL_S)
                if messages:
                    self._deliver(messages)
                if time.monotonic() >= next_ends:
                    next_ends = time.monotonic() + ENDS_REFRESH_S
                    self._copy_ends()
            self._serve_requests()
            consumer.close()  # revokes everything (the callback releases it), leaves
        except BaseException as exc:  # noqa: BLE001 - reported to the loop, which ends the worker
            log.exception("the consumer thread failed")
            self._to_loop(self._ownership.consumer_failed, exc)
        finally:
            self._closed.set()

    def _serve_requests(self) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                request()
            except KafkaException as exc:
                # e.g. resuming a partition revoked meanwhile: nothing to do any more.
                log.info("consumer request failed: %s", exc.args[0].str())

    def _deliver(self, messages: list[Any]) -> None:
        records = []
        for m in messages:
            error = m.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                # Transport errors and the like: librdkafka reconnects by itself.
                log.warning("consumer: %s", error.str())
                continue
            partition, offset = cast(int, m.partition()), cast(int, m.offset())
            records.append(CommandRecord(partition, offset, m.key(), m.value()))
        if records:
            self._to_loop(self._ownership.received, records)

    def _copy_ends(self) -> None:
        ends = {}
        for tp in self._consumer.assignment():
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:  # known (librdkafka has fetched from it)
                ends[tp.partition] = high
        self.ends = ends  # replaced whole: the loop reads it without a lock

    def _read_metadata(self) -> None:
        self._metadata = self._consumer.consumer_group_metadata()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)  # nothing is fetched until the worker restored them
            self._to_loop(self._ownership.assigned, [tp.partition for tp in partitions])
        self._to_loop(self._joined)  # after `assigned`: the loop learns both in this order
        self._read_metadata()

    def _joined(self) -> None:
        self.joined = True

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._release(partitions, lost=False)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._release(partitions, lost=True)

    def _release(self, partitions: list[TopicPartition], lost: bool) -> None:
        loop = self._loop
        if partitions and loop is not None and not loop.is_closed():
            parts = [tp.partition for tp in partitions]

            async def release() -> None:
                await self._ownership.released(parts, lost)

            future = asyncio.run_coroutine_threadsafe(release(), loop)
            try:
                future.result(RELEASE_TIMEOUT_S)
            except Exception:
                log.exception("releasing partitions %s failed", parts)
        self._read_metadata()

    def _to_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _tps(self, partitions: list[int]) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in partitions]


# Settings of the group member that an unsubscribed reader of the group must not carry.
_MEMBER_ONLY = frozenset(
    {
        "group.protocol",
        "group.instance.id",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
    }
)
