"""What the live workers run: the registries workers publish on cerebelum.workflows.

    await publish_workflows(settings, worker_id, registry)   # a worker, before it joins the group
    await withdraw_workflows(settings, worker_id)            # a worker, after it left the group

One record per worker on the compacted topic, key = worker id, value = JSON:

    {"worker_id": "host:4242", "at": 1764600000000,
     "workflows": [{"name": "order", "versions": ["3f2a9c1b7d40", "1c0e5b2a9f33"],
                    "graphs": {"3f2a9c1b7d40": {...Workflow.graph()...}, ...}}, ...]}

`at` is epoch milliseconds; versions are newest first (the first is what a new start runs);
`graphs` (absent in records of older workers) holds each version's shape.
Compaction keeps each worker's last record and a tombstone (null value) withdraws it. A worker
that crashed leaves its record behind, so a reader trusts a record only while its worker is a
member of the worker group: workers name themselves `cerebelum-worker:<worker id>` (their
Kafka client id), which the group's description lists.

`WorkflowDirectory` is the reader. The API keeps one following the topic in the background:

1. read the topic from its beginning to its end offsets (then `caught_up` is set);
2. follow it with long polls, applying each record (a tombstone removes the worker);
3. on a Kafka error, reopen with backoff and go on from the offsets already read.

`live_workflows()` joins what was read with the group's members. The CLI reads once with
`load()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError
from aiokafka.structs import ConsumerRecord

from cerebelum._aiokafka import start_or_stop
from cerebelum.admin.cluster import ClusterInspector, GroupDescription
from cerebelum.config import Settings
from cerebelum.constants import DEFAULT_NAMES, Names
from cerebelum.core.limits import LIMITER_WORKFLOW
from cerebelum.core.schedules import SCHEDULE_WORKFLOW
from cerebelum.core.workflow import Registry
from cerebelum.errors import KafkaUnavailable
from cerebelum.security.kafka import aiokafka_kwargs

log = logging.getLogger(__name__)

# Publishing is one small record: a healthy broker takes it in milliseconds. Past this the
# worker is told (KafkaUnavailable) rather than left waiting on a broker that is away.
PUBLISH_TIMEOUT_S = 15.0
# Reading the topic to its end: a few records per worker ever, compacted; past this Kafka is
# not answering and the reader retries (the API) or gives up (the CLI).
LOAD_TIMEOUT_S = 10.0
# Following waits on long polls: the broker answers as soon as a record arrives, so this costs
# no freshness; an idle follower (every worker has one, and the API) fetches every 2 s, and
# aiokafka's fetcher wakes no more often (consumer_timeout_ms, whose 0.2 s default cost the
# mirror a third of its idle CPU: decisions.md §10).
FOLLOW_WAIT_MS = 2000
# Reconnecting after a Kafka error: first after half a second, doubling up to ten.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0


def registry_record(worker_id: str, registry: Registry, at_ms: int) -> dict[str, Any]:
    """The value a worker publishes (see the module docstring)."""
    return {
        "worker_id": worker_id,
        "at": at_ms,
        "workflows": [
            {
                "name": name,
                "versions": registry.versions_newest_first(name),
                # Each version's shape (Workflow.graph): what GET /workflows shows and draws.
                "graphs": {v: _graph(registry, name, v) for v in registry.versions(name)},
            }
            for name in registry.names()
        ],
    }


def _graph(registry: Registry, name: str, version: str) -> dict[str, Any] | None:
    """The version's graph; None (logged) if describing it fails: a worker publishes, and
    runs, its workflows whatever a user's step object does when looked at."""
    workflow = registry.get(name, version)
    assert workflow is not None  # a version the registry listed
    try:
        return workflow.graph()
    except Exception as exc:  # noqa: BLE001 - a graph is information, never a reason to stop
        log.warning("cannot describe workflow %s version %s (%r); published without its graph",
                    name, version, exc)  # fmt: skip
        return None


async def publish_workflows(
    settings: Settings, worker_id: str, registry: Registry, timeout: float = PUBLISH_TIMEOUT_S
) -> None:
    """Publish the workflows `worker_id` runs; KafkaUnavailable if not acknowledged in time."""
    value = orjson.dumps(registry_record(worker_id, registry, int(time.time() * 1000)))
    await _produce(settings, worker_id, value, timeout)


async def withdraw_workflows(
    settings: Settings, worker_id: str, timeout: float = PUBLISH_TIMEOUT_S
) -> None:
    """Withdraw `worker_id`'s record (a tombstone); KafkaUnavailable if not acknowledged."""
    await _produce(settings, worker_id, None, timeout)


async def _produce(settings: Settings, key: str, value: bytes | None, timeout: float) -> None:
    producer = AIOKafkaProducer(
        **aiokafka_kwargs(settings),
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=int(timeout * 1000),  # an unsent record expires within the bound
    )
    try:
        # Bootstrap, producer id (retried forever by aiokafka), send: all within the bound.
        async with asyncio.timeout(timeout):
            await start_or_stop(producer)
            try:
                await producer.send_and_wait(settings.names.workflows, value, key.encode())
            finally:
                await producer.stop()  # a record not yet sent expires within `timeout`
    except (KafkaError, OSError, TimeoutError) as exc:
        cause = None if isinstance(exc, TimeoutError) else exc
        raise KafkaUnavailable(
            settings.kafka_bootstrap, timeout, f"acknowledge the workflows of {key}", cause
        ) from None


@dataclass(frozen=True, slots=True)
class PublishedWorkflows:
    """One worker's record."""

    worker_id: str
    at: int  # epoch ms
    workflows: dict[str, tuple[str, ...]]  # name -> versions, newest first
    # name -> version -> its graph (records of workers before graphs were published have none)
    graphs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return sorted(self.workflows)


@dataclass(frozen=True, slots=True)
class LiveWorkflows:
    """What the workers in the group now run, as far as their records tell."""

    live_workers: tuple[str, ...]  # worker ids of the group's members
    unpublished: tuple[str, ...]  # live workers without a record (older, or not read yet)
    workflows: dict[str, tuple[str, ...]]  # name -> versions, over the live workers' records
    # (name, version) -> the live workers that run it
    runners: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    graphs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True if there are live workers and the record of every one is known."""
        return bool(self.live_workers) and not self.unpublished


def parse_record(record: ConsumerRecord) -> tuple[str, PublishedWorkflows | None] | None:
    """(worker id, its workflows or None for a tombstone); None for a record that is not ours."""
    if record.key is None:
        return None
    try:
        worker_id = record.key.decode()
        if record.value is None:
            return worker_id, None
        body = orjson.loads(record.value)
        workflows = {
            str(w["name"]): tuple(str(v) for v in w["versions"]) for w in body["workflows"]
        }
        graphs = {
            str(w["name"]): dict(w["graphs"])
            for w in body["workflows"]
            if isinstance(w.get("graphs"), dict)
        }
        return worker_id, PublishedWorkflows(worker_id, int(body.get("at", 0)), workflows, graphs)
    except (UnicodeDecodeError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.warning("%s: unreadable record at offset %d: %r", record.topic, record.offset, exc)
        return None


def live_worker_ids(description: GroupDescription, names: Names = DEFAULT_NAMES) -> list[str]:
    """The worker ids of the worker group's members (from their client ids)."""
    prefix = names.worker_client_id_prefix
    return sorted(
        m.client_id.removeprefix(prefix)
        for m in description.members
        if m.client_id.startswith(prefix)
    )


def join_live(live: list[str], published: Mapping[str, PublishedWorkflows]) -> LiveWorkflows:
    """The live workers' workflows; versions merged, the latest published record's order first."""
    known = sorted((published[w] for w in live if w in published), key=lambda p: -p.at)
    workflows: dict[str, list[str]] = {}
    runners: dict[tuple[str, str], list[str]] = {}
    graphs: dict[tuple[str, str], dict[str, Any]] = {}
    for record in known:
        for name, versions in record.workflows.items():
            merged = workflows.setdefault(name, [])
            merged += [v for v in versions if v not in merged]
            for v in versions:
                runners.setdefault((name, v), []).append(record.worker_id)
                graph = record.graphs.get(name, {}).get(v)
                if graph is not None:
                    graphs.setdefault((name, v), graph)
    return LiveWorkflows(
        live_workers=tuple(live),
        unpublished=tuple(w for w in live if w not in published),
        workflows={name: tuple(workflows[name]) for name in sorted(workflows)},
        runners={key: tuple(sorted(workers)) for key, workers in runners.items()},
        graphs=graphs,
    )


class WorkflowDirectory:
    """Every worker's record on cerebelum.workflows, kept current (see the module docstring)."""

    def __init__(self, settings: Settings, inspector: ClusterInspector | None = None) -> None:
        self.settings = settings
        self._own_inspector = inspector is None
        self._inspector = inspector or ClusterInspector(settings)
        self._published: dict[str, PublishedWorkflows] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._progress = asyncio.Condition()
        self.caught_up = asyncio.Event()  # the topic was read to its end at least once

    def published(self, worker_id: str) -> PublishedWorkflows | None:
        return self._published.get(worker_id)

    def published_names(self) -> set[str]:
        """Every workflow named in a record read so far, its worker live or not."""
        return {name for record in self._published.values() for name in record.workflows}

    async def live_workflows(self, *, cached: bool = False) -> LiveWorkflows:
        """Join the records read so far with the worker group's members now (or, `cached`,
        as described at most a second ago)."""
        inspector = self._inspector
        description = await (inspector.cached_description() if cached else inspector.describe())
        return join_live(live_worker_ids(description, self.settings.names), self._published)

    # -- reading ---------------------------------------------------------------------------

    async def load(self, timeout: float = LOAD_TIMEOUT_S) -> None:
        """Read the topic once, to its end offsets now (the CLI's way)."""
        async with asyncio.timeout(timeout):
            tps = await self._open()
            try:
                await self._read_to(await self._ends(tps))
            finally:
                await self._close_consumer()

    async def run(self) -> None:
        """Read the topic, then follow it until cancelled, reopening after Kafka errors."""
        delay = RETRY_FIRST_S
        topic = self.settings.names.workflows
        while True:
            try:
                async with asyncio.timeout(LOAD_TIMEOUT_S):
                    tps = await self._open()
                    await self._read_to(await self._ends(tps))
                self.caught_up.set()
                delay = RETRY_FIRST_S
                while True:
                    await self._read_once()
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("%s: reading failed (%r); retrying in %.1f s", topic, exc, delay)
            except Exception:  # a bug must not end the reader unseen: say so, and go on
                log.exception("%s: reader failed; retrying in %.1f s", topic, delay)
            finally:
                await self._close_consumer()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def sync(self, timeout: float = LOAD_TIMEOUT_S) -> None:
        """Wait until `run()` has applied every record written before this call."""
        async with asyncio.timeout(timeout):
            await self.caught_up.wait()
            consumer = self._consumer
            if consumer is None:
                raise TimeoutError("not following")
            ends = await consumer.end_offsets(list(self._positions))
            async with self._progress:
                await self._progress.wait_for(lambda: self._reached(ends))

    async def close(self) -> None:
        await self._close_consumer()
        if self._own_inspector:
            await self._inspector.close()

    async def _open(self) -> list[TopicPartition]:
        consumer = AIOKafkaConsumer(
            **aiokafka_kwargs(self.settings),
            enable_auto_commit=False,
            # Records go to the topic without transactions; read_committed reads them all the same.
            isolation_level="read_committed",
            auto_offset_reset="earliest",  # a position compaction or deletion made invalid
            fetch_max_wait_ms=FOLLOW_WAIT_MS,
            consumer_timeout_ms=FOLLOW_WAIT_MS,
        )
        await start_or_stop(consumer)
        self._consumer = consumer  # closed by the caller from here on
        # The consumer's own metadata only covers assigned topics; ask for the topic's now.
        metadata = await consumer._client.fetch_all_metadata()
        topic = self.settings.names.workflows
        partitions = metadata.partitions_for_topic(topic)
        if not partitions:
            raise UnknownTopicOrPartitionError(f"{topic} (run `cerebelum topics apply`)")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        for tp in tps:
            if tp in self._positions:
                consumer.seek(tp, self._positions[tp])  # go on where the last reader stopped
            else:
                await consumer.seek_to_beginning(tp)
        return tps

    async def _ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        assert self._consumer is not None
        return dict(await self._consumer.end_offsets(tps))

    async def _read_to(self, ends: dict[TopicPartition, int]) -> None:
        while not self._reached(ends):
            await self._read_once()

    def _reached(self, ends: Mapping[TopicPartition, int]) -> bool:
        return all(self._positions.get(tp, 0) >= end for tp, end in ends.items())

    async def _read_once(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        batches = await consumer.getmany(timeout_ms=FOLLOW_WAIT_MS)
        for records in batches.values():
            for record in records:
                parsed = parse_record(record)
                if parsed is None:
                    continue
                worker_id, workflows = parsed
                if workflows is None:
                    self._published.pop(worker_id, None)
                else:
                    self._published[worker_id] = workflows
        for tp in consumer.assignment():
            self._positions[tp] = await consumer.position(tp)
        async with self._progress:
            self._progress.notify_all()

    async def _close_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


def version_rows(
    live: LiveWorkflows, counts: Mapping[tuple[str, str], tuple[int, int]] | None
) -> dict[str, list[dict[str, Any]]]:
    """Each workflow's versions (GET /workflows, `cerebelum workflows`): the live workers'
    versions newest first, then any version no live worker runs that still has live
    executions (blocked, waiting for it: decisions.md §6), with `workers` [] and no graph.
    `live_executions` counts every execution not ended (blocked ones included) and
    `blocked_executions` those blocked; a version with none of either can be retired. With
    `counts` None (PostgreSQL away) both are None."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, versions in live.workflows.items():
        out[name] = [_row(live, counts, name, v, i == 0) for i, v in enumerate(versions)]
    for name, version in sorted(counts or {}):
        if name in (SCHEDULE_WORKFLOW, LIMITER_WORKFLOW):  # built into every worker
            continue
        rows = out.setdefault(name, [])
        if all(r["version"] != version for r in rows):
            rows.append(_row(live, counts, name, version, False))
    return out


def _row(
    live: LiveWorkflows,
    counts: Mapping[tuple[str, str], tuple[int, int]] | None,
    name: str,
    version: str,
    newest: bool,
) -> dict[str, Any]:
    n, blocked = (None, None) if counts is None else counts.get((name, version), (0, 0))
    return {
        "version": version,
        "newest": newest,  # what a new start runs
        "workers": list(live.runners.get((name, version), ())),
        "live_executions": n,
        "blocked_executions": blocked,
        "graph": live.graphs.get((name, version)),
    }
