"""The worker process: one member of the consumer group over cerebelum.commands.

The group decides which partitions this worker owns (incrementally: a failover or a join
moves only the partitions that must move). One transactional producer carries every owned
partition's decisions (group commit across partitions; see transactions.py for fencing).

Taking over partitions (assigned by the group; the consumer has paused them):
1. fetch their committed offsets — with stable offsets, so this waits while a previous owner's
   transaction that commits offsets for them is in flight (it either commits, and we see its
   writes, or aborts, and nobody does);
2. restore their executions from cerebelum.state, read to its last stable offset;
3. re-arm their timers, queue a Recover for each execution with a step in flight (recorded as
   StepRescheduled, then run again), and resume their input.

The commit loop, one turn:
1. take what is queued (commands, step outcomes, due timers, recoveries) from every owned
   partition, up to MAX_BATCH (inputs queue while the previous transaction commits, so batches
   grow under load and latency stays one commit under light load);
2. decide them (batch.py) without touching the committed states;
3. commit one transaction: events, snapshots, dead letters, and the input offset of every
   partition it writes for;
4. after the commit, and only then: install the new states and carry out the effects (run
   steps, arm timers). A transaction that fails leaves everything as it was: its inputs are
   queued again and decided anew.

Releasing partitions (revoked by the group): they stop being owned at once (queued inputs, step
outcomes and timers of theirs are dropped from then on), and the revocation completes only
after the transaction in flight has ended, so nothing is written for them once they move.

Telemetry (`self.metrics`, cerebelum.telemetry.metrics): each committed transaction adds its
batch's tallies, once; everything else is read when scraped. `alive()` and `ready()` answer
/healthz and /readyz: ready once the member has joined the group and restored every partition
the group gave it (a member given none is ready too: it is idle, waiting for work). Tracing
(`self.tracing`, cerebelum.telemetry.tracing, None when off): the step runner makes a span per
step run; each committed transaction emits the span of every execution it ended, once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from confluent_kafka import KafkaError, KafkaException

from cerebelum.admin.topics import partition_count_problems
from cerebelum.admin.workflows import publish_workflows, withdraw_workflows
from cerebelum.config import Settings
from cerebelum.constants import (
    HEADER_STATE_WRITER,
    PARTITIONS,
    STATE_OWNER_KEY,
)
from cerebelum.core.commands import FailExecution, Recover, StepOutcome, TimerDue
from cerebelum.core.machine import ArmTimer, RunStep
from cerebelum.core.workflow import Registry
from cerebelum.errors import CerebelumError, KafkaUnavailable
from cerebelum.telemetry.metrics import WorkerMetrics
from cerebelum.worker import elsewhere, kafka_config
from cerebelum.worker.batch import (
    Batch,
    CommandRecord,
    Headers,
    Input,
    Record,
    dead_letter_headers,
    decide_batch,
)
from cerebelum.worker.consumer import CommandConsumer
from cerebelum.worker.partition import PartitionState
from cerebelum.worker.ranges import format_ranges
from cerebelum.worker.restore import RestoredPartition
from cerebelum.worker.runner import StepRunner
from cerebelum.worker.takeover import take_over
from cerebelum.worker.timers import Timers
from cerebelum.worker.transactions import ProducerFenced, TransactionAborted, Transactor

if TYPE_CHECKING:
    from cerebelum.telemetry.tracing import Tracing

log = logging.getLogger(__name__)

# Inputs decided in one transaction at most: bounds the transaction's size and the time one
# batch holds the event loop.
MAX_BATCH = 5_000
# A partition whose queued inputs pass this is paused until the worker catches up: bounds
# memory when commands arrive faster than transactions commit (64 x 2,000 records at most).
MAX_BACKLOG = 2_000
# A failed transaction is retried after a pause growing from the first to the last value: a
# broker that went away gets time to come back without a retry storm.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 5.0
# The committed-offset fetch of a take-over waits out a dead owner's open transaction (up to
# its transaction timeout); far longer than that, the broker is not answering: retry.
COMMITTED_TIMEOUT_S = 30.0
# Errors that reject a record rather than the transaction: a batch failing with one is redone
# input by input, and an input that fails alone is dead-lettered (or fails its execution).
RECORD_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.POLICY_VIOLATION,
    }
)
# Throughput and batch sizes go to the log this often (when there was work): often enough to
# watch a load, rarely enough to read.
REPORT_INTERVAL_S = 10.0


class ClusterMisconfigured(CerebelumError):
    """The topics are missing or have another partition count than the cluster was built with."""


class Worker:
    def __init__(
        self, settings: Settings, registry: Registry, tracing: Tracing | None = None
    ) -> None:
        self.settings = settings
        self.names = settings.names
        self.registry = registry
        # Shown by the group's description (GET /cluster, `cerebelum cluster`): who owns what.
        self.worker_id = worker_identity(settings)
        # Recorded on each step outcome (StepCompleted/StepFailed `worker`): the same name.
        self.client_id = self.names.worker_client_id(self.worker_id)
        self.consumer = CommandConsumer(
            kafka_config.consumer_config(settings, self.worker_id), self, self.names.commands
        )
        pause = settings.fault_pause_before_commit
        self.transactor = Transactor(
            kafka_config.producer_config(settings, self.worker_id),
            lambda: self.consumer.group_metadata,
            self.consumer.refresh_metadata,
            Path(pause) if pause else None,
            commands_topic=self.names.commands,
        )
        self._restore_config = kafka_config.restore_config(settings, self.worker_id)
        self._fence_config = kafka_config.fence_config(settings, self.worker_id)
        self._transactional_id = self.names.worker_transactional_id(self.worker_id)
        self._writer = self._transactional_id.encode()  # on each snapshot: who wrote it
        self._owner_record = orjson.dumps({"writer": self._transactional_id})
        self._owner_headers: Headers = [(HEADER_STATE_WRITER, self._writer)]
        self.owned: dict[int, PartitionState] = {}
        self.metrics = WorkerMetrics(
            owned_partitions=lambda: len(self.owned),
            consumer_lag=self.consumer_lag,
            inputs_queued=lambda: len(self._queue),
            steps_running=lambda: self.runner.running,
        )
        # OpenTelemetry spans (None: off), built by the CLI from settings.traces_exporter.
        self.tracing = tracing
        self.runner = StepRunner(
            settings.max_concurrent_steps, observe=self.metrics.step_ran, tracing=tracing,
            default_timeout=settings.step_timeout_s or None,
        )  # fmt: skip
        self._assigned: set[int] = set()  # by the group; owned once restored
        self._queue: deque[tuple[PartitionState, Input]] = deque()
        self._paused: set[int] = set()  # partitions paused for backlog
        self._work = asyncio.Event()
        self._timers = Timers(self._enqueue_due)
        self._committing: asyncio.Future[None] | None = None
        self._setups: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._single = 0  # inputs left to decide one per transaction (after a record error)
        self.decided = 0  # inputs decided in committed transactions
        # Partitions taken over whose ownership record is not written yet (takeover.py).
        self._announce: dict[int, PartitionState] = {}
        self._draining = False
        self._started = False
        self._stopped = asyncio.Event()
        self.fatal = asyncio.Event()
        self.failed: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self._check_topics()
        await self.transactor.start()
        # Before joining: the API refuses starts of workflows no live worker has published.
        await self._publish_workflows()
        self.consumer.start()
        loop = asyncio.get_running_loop()
        tasks = (
            (self._commit_loop(), "commit-loop"),
            (self._timers.run(), "timers"),
            (self._report_progress(), "report"),
            (elsewhere.watch(self.settings, self.registry), "elsewhere"),
        )
        for coro, name in tasks:
            task = loop.create_task(coro, name=name)
            task.add_done_callback(self._task_ended)
            self._tasks.append(task)
        self._started = True
        log.info(
            "worker %s started in namespace %s (group %s); workflows: %s", self.worker_id,
            self.names.namespace, self.names.worker_group, ", ".join(self.registry.names()),
        )  # fmt: skip

    async def stop(self) -> None:
        """Graceful stop: take no more input, let running steps settle, commit, leave."""
        self._draining = True
        self.consumer.pause(list(self._assigned))
        await self.runner.drain(self.settings.shutdown_grace_s)
        await self._settle(self.settings.shutdown_grace_s)
        await self.consumer.stop()  # leaves the group: the revocation releases everything
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._setups, return_exceptions=True)
        self.runner.close()
        await self.transactor.close()
        try:
            await withdraw_workflows(self.settings, self.worker_id)
        except KafkaUnavailable as exc:  # its record is ignored anyway once it left the group
            log.warning("could not withdraw this worker's workflows: %s", exc)
        self._stopped.set()
        log.info("worker stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # -- telemetry (on the loop) -------------------------------------------------------------

    async def alive(self) -> tuple[bool, dict[str, object]]:
        """/healthz: answering proves the loop runs; a fatal error means it is going down."""
        return not self.fatal.is_set(), {"worker": self.worker_id}

    async def ready(self) -> tuple[bool, dict[str, object]]:
        """/readyz: a member of the group that serves every partition it was given."""
        restoring = self._assigned - set(self.owned)
        ok = (
            self._started and self.consumer.joined and not restoring
            and not self._draining and not self.fatal.is_set()
        )  # fmt: skip
        return ok, {
            "worker": self.worker_id,
            "joined": self.consumer.joined,
            "owned_partitions": len(self.owned),
            "restoring_partitions": len(restoring),
            "stopping": self._draining,
        }

    def consumer_lag(self) -> dict[int, int]:
        """Owned partition -> commands not yet decided in a committed transaction (from the
        consumer's cached end offsets, ENDS_REFRESH_S old at most)."""
        ends = self.consumer.ends
        return {p: max(0, ends[p] - ps.committed) for p, ps in self.owned.items() if p in ends}

    async def _settle(self, timeout: float) -> None:
        """Wait until nothing is queued or committing (the last outcomes are recorded)."""
        deadline = time.monotonic() + timeout
        while (self._queue or self._committing is not None) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _publish_workflows(self) -> None:
        """Publish the registry; if Kafka does not take it now, keep trying in the background
        (meanwhile the API accepts any start, so nothing is refused wrongly)."""
        try:
            await publish_workflows(self.settings, self.worker_id, self.registry)
        except KafkaUnavailable as exc:
            log.warning("could not publish this worker's workflows (%s); retrying", exc)
            task = asyncio.get_running_loop().create_task(self._publish_until_done())
            self._tasks.append(task)

    async def _publish_until_done(self) -> None:
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            try:
                await publish_workflows(self.settings, self.worker_id, self.registry)
                return
            except KafkaUnavailable:
                delay = min(delay * 2, 30.0)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("the worker's %s task failed: %r", task.get_name(), error)
            self.consumer_failed(error)

    async def _report_progress(self) -> None:
        """Log throughput and batch sizes every REPORT_INTERVAL_S while there is work."""
        transactions, decided = self.transactor.transactions, self.decided
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            t, d = self.transactor.transactions - transactions, self.decided - decided
            transactions, decided = self.transactor.transactions, self.decided
            if t:
                log.info(
                    "%.1f transactions/s, %.1f inputs/s, %.1f inputs per transaction; "
                    "%d partitions owned, %d queued, %d steps running, %d timers",
                    t / REPORT_INTERVAL_S, d / REPORT_INTERVAL_S, d / t, len(self.owned),
                    len(self._queue), self.runner.running, len(self._timers),
                )  # fmt: skip

    async def _check_topics(self) -> None:
        """Wait for the broker (with backoff), then refuse topics that cannot be served."""
        delay = 1.0
        names = self.names
        topics = [names.commands, names.events, names.state, names.dlq]
        while True:
            try:
                counts = await asyncio.to_thread(self.consumer.partition_counts, topics, 10)
                break
            except KafkaException as exc:
                log.warning(
                    "Kafka at %s does not answer (%s); retrying in %.0f s",
                    self.settings.kafka_bootstrap, exc.args[0].str(), delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        problems = [f"topic {t} is missing (run `cerebelum topics apply`)" for t in topics
                    if t not in counts]  # fmt: skip
        problems += partition_count_problems(counts, names=names)
        if problems:
            raise ClusterMisconfigured("; ".join(problems))

    # -- what the consumer thread reports (on the loop) ----------------------------------------

    def assigned(self, partitions: list[int]) -> None:
        self._assigned.update(partitions)
        self.metrics.rebalanced("assigned")
        log.info(
            "assigned partitions %s (new: %s)",
            format_ranges(self._assigned),
            format_ranges(partitions),
        )
        task = asyncio.get_running_loop().create_task(self._take_over(partitions))
        self._setups.add(task)
        task.add_done_callback(self._setups.discard)

    async def released(self, partitions: list[int], lost: bool) -> None:
        self._assigned.difference_update(partitions)
        self.metrics.rebalanced("lost" if lost else "revoked")
        self._paused.difference_update(partitions)
        for p in partitions:
            ps = self.owned.pop(p, None)
            if ps is not None:
                ps.released = True
                self._timers.forget(ps)
        if lost:
            for p in partitions:  # one line each: whoever reads the log looks for its partition
                log.warning(
                    "partition %d: fenced (this worker's membership expired: it was paused or "
                    "cut off), so it writes nothing more for it; its new owner carries on",
                    p, extra={"partition": p},
                )  # fmt: skip
        log.info("%s partitions %s", "lost" if lost else "revoked", format_ranges(partitions))
        if not lost and self._committing is not None:
            # The transaction in flight may write for these partitions: it ends first.
            await asyncio.shield(self._committing)
        log.info("owning partitions %s", format_ranges(self.owned))

    def received(self, records: list[CommandRecord]) -> None:
        owned = self.owned
        for record in records:
            ps = owned.get(record.partition)
            if ps is not None and ps.accept(record.offset):
                self._enqueue(ps, record)
        for p in {r.partition for r in records}:
            ps = owned.get(p)
            if ps is not None and ps.backlog > MAX_BACKLOG and p not in self._paused:
                self.consumer.pause([p])
                self._paused.add(p)

    def consumer_failed(self, error: BaseException) -> None:
        if self.failed is None:
            self.failed = error
        self.fatal.set()

    # -- inputs from steps and timers ------------------------------------------------------

    def _enqueue(self, ps: PartitionState, item: Input) -> None:
        ps.backlog += 1
        self._queue.append((ps, item))
        self._work.set()

    def _report(self, ps: PartitionState, outcome: StepOutcome) -> None:
        outcome.worker = self.client_id  # who ran it, shown in the execution's step table
        if not ps.released:  # else the partition moved on; its new owner re-runs the step
            self._enqueue(ps, outcome)

    def _enqueue_due(self, ps: PartitionState, due: TimerDue) -> None:
        self._enqueue(ps, due)

    # -- taking over -----------------------------------------------------------------------

    async def _take_over(self, partitions: list[int], seek: bool = False) -> None:
        delay = 1.0
        started = time.monotonic()
        while True:
            parts = [p for p in partitions if p in self._assigned and p not in self.owned]
            if not parts:
                return
            try:
                restored, committed = await asyncio.to_thread(
                    take_over,
                    self._restore_config,
                    self._fence_config,
                    self._transactional_id,
                    parts,
                    self.consumer.committed,
                    self.settings.transaction_timeout_ms / 1000 + 5,
                    self.names.state,
                )
                for p in [p for p, offset in committed.items() if offset < 0]:
                    committed[p], _ = await asyncio.to_thread(
                        self.consumer.watermarks, p, COMMITTED_TIMEOUT_S
                    )
                break
            except Exception:
                # The broker may be restarting or the coordinator moving: try again shortly.
                log.exception("taking over partitions %s failed; retrying", format_ranges(parts))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        for p in parts:
            if p in self._assigned and p not in self.owned:  # not revoked meanwhile
                self._own(p, restored[p], committed[p], seek)
        self.metrics.restore_seconds.observe(time.monotonic() - started)
        log.info("owning partitions %s", format_ranges(self.owned))

    def _own(self, p: int, restored: RestoredPartition, offset: int, seek: bool) -> None:
        ps = PartitionState(p, restored, offset)
        self.owned[p] = ps
        self._announce[p] = ps
        self._work.set()
        for fire_at, execution_id, timer_id in restored.timers:
            self._timers.arm(ps, fire_at, execution_id, timer_id)
        for execution_id in restored.running:
            self._enqueue(ps, Recover(execution_id))
        for execution_id in versions_to_touch(restored, self.registry):
            self._enqueue(ps, Recover(execution_id))
        if seek:  # a restore after a failure: the consumer had read past the committed offset
            self.consumer.seek(p, offset)
        if not self._draining:
            self.consumer.resume([p])

    async def _restore(self, states: list[PartitionState]) -> None:
        """Something unexpected failed: rebuild these partitions from the log."""
        parts = [ps.partition for ps in states if self.owned.get(ps.partition) is ps]
        for p in parts:
            ps = self.owned.pop(p)
            ps.released = True
            self._timers.forget(ps)
        if parts:
            self.consumer.pause(parts)
            await self._take_over(parts, seek=True)

    # -- the commit loop -------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        failures = 0
        interval = self.settings.commit_interval_ms / 1000
        last_start = 0.0
        while True:
            await self._work.wait()
            self._work.clear()
            while self._queue or self._announce:
                # Group commit over time (Settings.commit_interval_ms): wait for the interval
                # since the last transaction began, unless a full batch is already waiting.
                wait = last_start + interval - time.monotonic()
                if wait > 0 and len(self._queue) < MAX_BATCH:
                    await asyncio.sleep(wait)
                last_start = time.monotonic()
                inputs = self._take(1 if self._single else MAX_BATCH)
                batch = decide_batch(
                    inputs, self.registry, _now_ms(), PARTITIONS, self._writer, self.names
                )
                announced = self._add_announcements(batch)
                try:
                    await self._commit(batch)
                except (TransactionAborted, ProducerFenced) as exc:
                    failures += 1
                    await self._after_failure(batch, exc, failures)
                    continue
                except Exception:
                    log.exception("the commit loop failed; restoring %s", list(batch.partitions))
                    failures += 1
                    await asyncio.sleep(_backoff(failures))
                    await self._restore(list(batch.partitions.values()))
                    continue
                failures = 0
                self.decided += len(inputs)
                if self._single:
                    self._single -= 1
                for p in announced:
                    self._announce.pop(p, None)
                self._install(batch)

    def _add_announcements(self, batch: Batch) -> list[int]:
        """Write the ownership record of each partition taken over since the last commit."""
        announced = []
        for p, ps in list(self._announce.items()):
            if ps.released:
                del self._announce[p]
                continue
            batch.records.append(
                Record(
                    self.names.state, p, STATE_OWNER_KEY, self._owner_record, self._owner_headers
                )
            )
            batch.partitions[p] = ps
            batch.offsets.setdefault(p, ps.committed)
            announced.append(p)
        return announced

    def _take(self, n: int) -> list[tuple[PartitionState, Input]]:
        queue = self._queue
        taken: list[tuple[PartitionState, Input]] = []
        while queue and len(taken) < n:
            ps, item = queue.popleft()
            ps.backlog -= 1
            if not ps.released:
                taken.append((ps, item))
        for p in list(self._paused):
            owner = self.owned.get(p)
            if owner is None or owner.backlog < MAX_BACKLOG // 2:
                self._paused.discard(p)
                if owner is not None and not self._draining:
                    self.consumer.resume([p])
        return taken

    async def _commit(self, batch: Batch) -> None:
        if not batch.needs_transaction:
            return
        self._committing = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        try:
            await self.transactor.commit(batch.records, batch.offsets)
        except Exception:
            self.metrics.transaction_failures += 1
            raise
        finally:
            self._committing.set_result(None)
            self._committing = None
        self.metrics.committed(len(batch.inputs), time.perf_counter() - started, batch.recorded)
        if batch.dead_letters:
            self.metrics.dead_lettered(batch.dead_letters)

    def _install(self, batch: Batch) -> None:
        for ps, execution_id, state in batch.installs:
            if not ps.released:
                ps.executions[execution_id] = state
        for p, offset in batch.offsets.items():
            batch.partitions[p].committed = offset
        runner = self.runner
        for ps, effect in batch.effects:
            if ps.released:
                continue  # the new owner re-runs and re-arms from the log
            if isinstance(effect, RunStep):
                runner.submit(effect, functools.partial(self._report, ps), ps.partition)
            elif isinstance(effect, ArmTimer):
                self._timers.arm(ps, effect.fire_at, effect.execution_id, effect.timer_id)
        for p, state in batch.ended:
            # Ended (cancelled, or failed in another branch) with steps still running: stop
            # them; their outcomes would be ignored anyway.
            if stopped := runner.cancel(state.id):
                log.info(
                    "execution %s ended (%s): stopped %d running step(s)", state.id,
                    state.status, stopped, extra={"execution_id": state.id, "partition": p},
                )  # fmt: skip
        if self.tracing is not None:
            for p, state in batch.ended:  # committed: emitted once, by this worker
                self.tracing.execution_ended(state, p)

    async def _after_failure(
        self, batch: Batch, exc: TransactionAborted | ProducerFenced, failures: int
    ) -> None:
        """A transaction failed: nothing of it is visible. Decide its inputs again, after a
        pause; input by input if a record was refused; quarantine an input refused alone."""
        if failures == 1 or failures % 20 == 0:  # once, then now and then while it lasts
            log.warning("transaction failed (%d in a row): %s; redoing its inputs", failures, exc)
        if isinstance(exc, ProducerFenced):
            await self._restart_producer()
        refused = isinstance(exc, TransactionAborted) and exc.code in RECORD_ERRORS
        if refused and len(batch.inputs) == 1:
            await self._quarantine(batch, str(exc))
            return
        if refused:
            self._single = len(batch.inputs)
        await asyncio.sleep(_backoff(failures))
        for ps, item in reversed(batch.inputs):
            ps.backlog += 1
            self._queue.appendleft((ps, item))

    async def _restart_producer(self) -> None:
        delay = 1.0
        while True:
            try:
                await self.transactor.restart()
                return
            except Exception as exc:
                log.warning("restarting the producer failed (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _quarantine(self, batch: Batch, error: str) -> None:
        """Kafka refuses to record this one input: dead-letter it (a command) or fail its
        execution (anything else), so the partition moves on."""
        ((ps, item),) = batch.inputs
        if isinstance(item, CommandRecord):
            # Without its value: the value may be what Kafka refused (the reason says why).
            headers = dead_letter_headers(item, f"could not be recorded: {error}", None, self.names)
            dead = Record(self.names.dlq, ps.partition, item.key, b"", headers)
            quarantined = Batch(
                batch.inputs,
                self.names,
                records=[dead],
                offsets={ps.partition: item.offset + 1},
                dead_letters={"unrecordable": 1},
                partitions={ps.partition: ps},
            )
        else:
            message = f"could not record: {error}"
            failure = FailExecution(item.execution_id, "InternalError", message)
            quarantined = decide_batch(
                [(ps, failure)], self.registry, _now_ms(), PARTITIONS, self._writer, self.names
            )
        log.error(
            "partition %d: quarantining %r: %s", ps.partition, item, error,
            extra={"partition": ps.partition, "execution_id": getattr(item, "execution_id", None)},
        )  # fmt: skip
        try:
            await self._commit(quarantined)
        except Exception:
            log.exception("partition %d: quarantining failed; restoring it", ps.partition)
            await self._restore([ps])
            return
        self._install(quarantined)


def versions_to_touch(restored: RestoredPartition, registry: Registry) -> list[str]:
    """The restored executions to Recover for their version's sake (decisions.md §6), beside
    those with a step in flight (recovered anyway): a blocked one this worker can now run or
    migrate, and a parked one whose version it lacks (blocked at once, so the API shows it,
    or migrated)."""
    running = set(restored.running)
    blocked = set(restored.blocked)
    touch: list[str] = []
    for (name, version), eids in restored.versions.items():
        if registry.get(name, version) is not None:
            wanted = [e for e in eids if e in blocked] if blocked else []
        elif registry.can_resume(name, version):
            wanted = eids  # a migration is declared: try it
        elif registry.get(name) is not None:
            # Parked ones to block, and blocked ones that may never have begun (their start
            # was held): those start on the version here. A Recover of the others records
            # nothing new.
            wanted = eids
        else:
            wanted = [e for e in eids if e not in blocked]  # to block
        touch += [e for e in wanted if e not in running]
    return touch


def worker_identity(settings: Settings) -> str:
    """The worker's name in the group's description (and its spans' service.instance.id)."""
    return settings.group_instance_id or f"{socket.gethostname()}:{os.getpid()}"


def _backoff(failures: int) -> float:
    return min(RETRY_FIRST_S * 2.0 ** (failures - 1), RETRY_MAX_S)


def _now_ms() -> int:
    return int(time.time() * 1000)
