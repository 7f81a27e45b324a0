"""The worker's one transactional producer, driven from its own thread.

A transaction carries the decisions of every owned partition that had input (group commit
across partitions). `commit` runs, in order, in the producer's thread:

1. begin the transaction;
2. send the input offsets of every partition it writes for, with the consumer's group
   metadata (KIP-447): the group coordinator refuses them if this worker is no longer the
   member that owns those partitions (a zombie: paused, cut off), so its transaction can
   only abort; and a new owner's committed-offset fetch (require_stable) waits until a
   transaction holding such offsets has ended, so it never restores around one in flight;
3. produce its records (events, snapshots, dead letters) to their partitions;
4. commit.

Failures come back as one of three exceptions: `TransactionAborted` (the transaction was
aborted, nothing of it is visible: decide its inputs again), `ProducerFenced` (the producer is
unusable, e.g. a newer process with the same transactional id, or a timed-out transaction:
`restart()` it, then decide again), or any other exception (a bug).

A hung `send_offsets_to_transaction` is abandoned: librdkafka (2.16, issues #5456 and #5511,
open) can block in it far past its timeout when the group coordinator's broker died, since the
coordinator request never times out and a dead cached coordinator is never looked up again.
Seen in the three-broker fault test: a kill -9 of the coordinator's broker stopped the worker
for minutes. Nothing of the transaction is committed at that point, so after
OFFSETS_WATCHDOG_S the worker leaves that producer and its thread behind (a generation number
keeps them from touching anything again) and raises ProducerFenced: the restarted producer's
init_transactions fences the old one and aborts its transaction, and the inputs are redone.

Why a thread: librdkafka's transactional calls block (each waits for broker round trips), and
the event loop must keep running steps and deciding the next batch meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from cerebelum.errors import CerebelumError
from cerebelum.worker.batch import Record

log = logging.getLogger(__name__)

# A blocking transactional call that takes longer than this has lost its broker: fail it and
# let the worker restart the producer (librdkafka's own default is infinite for some calls).
CALL_TIMEOUT_S = 30.0
# A retriable failure of send_offsets/commit (e.g. a coordinator moving) is retried this often,
# waiting this long between tries, before the transaction is aborted.
RETRIES = 5
RETRY_PAUSE_S = 0.05
# send_offsets_to_transaction taking longer than this is hung (see the module docstring). Past
# the transaction timeout the coordinator aborts the transaction anyway; a few seconds more
# leave room for a slow but live coordinator.
OFFSETS_WATCHDOG_MARGIN_S = 5.0
# How often the event loop looks at a commit in progress for a hung send_offsets.
WATCHDOG_POLL_S = 0.5


class _Abandoned(Exception):
    """Raised in a producer thread the worker has left behind; nobody awaits it."""


class TransactionAborted(CerebelumError):
    """The transaction was aborted; nothing it wrote is visible. Its inputs can be redone.
    `code` is the KafkaError code that made it fail."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class ProducerFenced(CerebelumError):
    """The producer can no longer commit (fenced or fatally failed); restart() it."""


GroupMetadata = Callable[[], Any]
RefreshMetadata = Callable[[], "Future[None]"]

# What the group coordinator answers to offsets sent with an out-of-date generation or member
# epoch: for a zombie that is final; for a live member whose epoch moved (the group's
# assignment changed), reading the metadata again and redoing the transaction cures it.
GROUP_FENCING = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.FENCED_MEMBER_EPOCH,
        KafkaError.STALE_MEMBER_EPOCH,
        KafkaError.FENCED_INSTANCE_ID,
    }
)
# How long the producer's thread waits for fresh group metadata before giving up on it.
REFRESH_TIMEOUT_S = 5.0


class Transactor:
    def __init__(
        self,
        config: dict[str, Any],
        group_metadata: GroupMetadata,
        refresh_metadata: RefreshMetadata,
        pause_before_commit: Path | None = None,
        *,
        commands_topic: str,
    ) -> None:
        self._config = config
        # The namespace's commands topic, whose offsets each transaction commits.
        self._commands_topic = commands_topic
        self._group_metadata = group_metadata
        self._refresh_metadata = refresh_metadata
        # Tests only (fault injection): stop this process between the offsets and the commit.
        self._pause_before_commit = pause_before_commit
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cerebelum-txn")
        self._producer: Producer | None = None
        self.transactions = 0
        # Bumped when a hung producer is abandoned: its thread checks it and stands down.
        self._generation = 0
        # When the send_offsets_to_transaction in progress began (monotonic), else None.
        self._offsets_since: float | None = None
        timeout_ms = int(config.get("transaction.timeout.ms", 60_000))
        self.offsets_watchdog_s = timeout_ms / 1000 + OFFSETS_WATCHDOG_MARGIN_S
        self.abandoned = 0

    async def start(self) -> None:
        """Create the producer and init_transactions (fences an older process with our id)."""
        await self._call(self._start)

    async def restart(self) -> None:
        await self._call(self._close)
        await self._call(self._start)

    async def close(self) -> None:
        await self._call(self._close)
        self._thread.shutdown(wait=True)

    async def commit(self, records: Sequence[Record], offsets: dict[int, int]) -> None:
        """Write `records` and commit `offsets` (partition -> next command offset) atomically."""
        future = asyncio.get_running_loop().run_in_executor(
            self._thread, self._commit, records, offsets
        )
        while True:
            done, _ = await asyncio.wait({future}, timeout=WATCHDOG_POLL_S)
            if done:
                break
            since = self._offsets_since
            if since is not None and time.monotonic() - since > self.offsets_watchdog_s:
                self._abandon()
                # Its thread may yet return (with _Abandoned): collect that, quietly.
                future.add_done_callback(lambda f: f.exception())
                raise ProducerFenced(
                    f"send_offsets_to_transaction hung for {self.offsets_watchdog_s:.0f} s "
                    "(the group coordinator's broker is gone): producer abandoned"
                )
        await future
        self.transactions += 1

    def _abandon(self) -> None:
        """Leave the hung producer and its thread behind; the next call gets a fresh thread."""
        log.warning(
            "send_offsets_to_transaction hung for over %.0f s: abandoning the producer "
            "(librdkafka issues #5456/#5511); a new one fences it",
            self.offsets_watchdog_s,
        )
        self._generation += 1
        self._offsets_since = None
        self._producer = None
        self._thread.shutdown(wait=False)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cerebelum-txn")
        self.abandoned += 1

    async def _call(self, fn: Callable[..., None], *args: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    # -- in the producer's thread -------------------------------------------------------------

    def _start(self) -> None:
        producer = Producer(self._config)
        while True:
            try:
                producer.init_transactions(CALL_TIMEOUT_S)
                break
            except KafkaException as exc:
                error = exc.args[0]
                if error.fatal():
                    raise
                # The broker may be starting or the coordinator loading: it says so, we wait.
                log.warning("init_transactions: %s; retrying", error.str())
                time.sleep(1.0)
        self._producer = producer

    def _close(self) -> None:
        if self._producer is not None:
            self._producer.flush(1.0)
            self._producer = None

    def _commit(self, records: Sequence[Record], offsets: dict[int, int]) -> None:
        producer = self._producer
        generation = self._generation
        if producer is None:
            raise ProducerFenced("the producer is closed")
        try:
            producer.begin_transaction()
            # Offsets first: a zombie's transaction fails here, before it wrote anything; and
            # the AddOffsetsToTxn round no longer races this transaction's own
            # AddPartitionsToTxn (CONCURRENT_TRANSACTIONS, whose retry librdkafka fixes at
            # 20 ms), which measured ~1.5 retried requests per transaction the other way round.
            positions = [TopicPartition(self._commands_topic, p, o) for p, o in offsets.items()]
            self._offsets_since = time.monotonic()
            try:
                self._retrying(
                    producer.send_offsets_to_transaction,
                    positions,
                    self._group_metadata(),
                    CALL_TIMEOUT_S,
                )
            finally:
                if generation == self._generation:
                    self._offsets_since = None
            if generation != self._generation:
                raise _Abandoned  # the worker went on with a new producer: write nothing
            produce = producer.produce
            for topic, partition, key, value, headers in records:
                try:
                    produce(topic, value, key, partition, headers=headers)
                except BufferError:  # the local queue is full: let librdkafka send, then retry
                    producer.flush(CALL_TIMEOUT_S)
                    produce(topic, value, key, partition, headers=headers)
            self._maybe_pause()
            self._retrying(producer.commit_transaction, CALL_TIMEOUT_S)
        except KafkaException as exc:
            if generation != self._generation:
                raise _Abandoned from None
            self._failed(producer, exc.args[0])

    def _retrying(self, call: Callable[..., None], *args: Any) -> None:
        for attempt in range(RETRIES + 1):
            try:
                call(*args)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if not error.retriable() or error.txn_requires_abort() or attempt == RETRIES:
                    raise
                time.sleep(RETRY_PAUSE_S)

    def _failed(self, producer: Producer, error: KafkaError) -> None:
        if error.fatal():
            log.warning("transaction failed, producer fenced: %s", error.str())
            self._producer = None
            raise ProducerFenced(error.str())
        log.warning("transaction failed, aborting: %s", error.str())
        if error.code() in GROUP_FENCING:
            try:
                self._refresh_metadata().result(REFRESH_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - the redo will fail the same way and retry
                log.info("could not read the group metadata again", exc_info=True)
        try:
            producer.abort_transaction(CALL_TIMEOUT_S)
        except KafkaException as exc:
            # Whether it was aborted is unknown: a restarted producer's init_transactions
            # aborts whatever of ours is still open, so the outcome is certain again.
            self._producer = None
            raise ProducerFenced(f"{error.str()}; abort failed: {exc.args[0].str()}") from None
        raise TransactionAborted(error.str(), error.code())

    def _maybe_pause(self) -> None:
        marker = self._pause_before_commit
        if marker is not None and marker.exists():
            marker.unlink()
            log.warning("fault injection: stopping before commit_transaction")
            os.kill(os.getpid(), signal.SIGSTOP)
