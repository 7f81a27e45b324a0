"""The cluster view: the workers in the group, what each owns, and how far behind each partition is.

    view = await cluster_view(settings, pool)      # GET /cluster, `cerebelum cluster`

A view is built from, in order:
1. the worker group's description (ConsumerGroupDescribe; DescribeGroups for the mirror's
   classic group): its state, its members with their client ids and hosts, and the partitions
   of cerebelum.commands each was assigned;
2. the worker group's committed offsets on cerebelum.commands and the partitions' end offsets
   (read_committed, so last stable offsets): the lag per partition;
3. the same for the mirror group on cerebelum.events: the mirror's lag;
4. PostgreSQL, when a pool is given: live executions per partition (executions.kafka_partition);
5. the topics' partition counts, checked against topics/topics.json: a topic grown past its
   declared count has partitions no worker serves (ids map onto PARTITIONS only), listed as
   `unserved_partitions` beside the `partition_problems`.

`ClusterInspector` holds the admin client and the offsets consumer; a long-lived process (the
API) keeps one and asks it for a cached description to name an execution's owner cheaply.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._group import ConsumerGroupDescription

from cerebelum._aiokafka import start_or_stop, stop_quietly
from cerebelum.admin.topics import partition_count_problems
from cerebelum.config import Settings
from cerebelum.constants import (
    DEFAULT_NAMES,
    PARTITIONS,
    Names,
)
from cerebelum.security.kafka import aiokafka_kwargs, librdkafka_config

# The API names an execution's owner from a description at most this old: ownership changes
# only on a rebalance (seconds), and one DescribeGroups per request would load the coordinator.
DESCRIPTION_MAX_AGE_S = 1.0

LIVE_PER_PARTITION = """
SELECT kafka_partition, count(*)::int AS live FROM executions
WHERE status NOT IN ('completed', 'failed', 'cancelled') AND kafka_partition IS NOT NULL
GROUP BY kafka_partition
"""

# The coordinator is loading, unavailable or elsewhere: retried, 10 x 0.3 s.
COORDINATOR_MOVING = frozenset(
    {
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
    }
)
COORDINATOR_RETRIES = 10


@dataclass(frozen=True, slots=True)
class Member:
    """One consumer in a group, as the group coordinator describes it."""

    member_id: str
    client_id: str  # workers name themselves "cerebelum-worker:<host:pid or instance id>"
    host: str
    partitions: tuple[int, ...]  # of the group's topic


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group: str
    state: str  # Stable, PreparingRebalance, CompletingRebalance, Empty, Dead
    members: tuple[Member, ...]

    def owners(self) -> dict[int, str]:
        """Partition → the client id of the member that owns it."""
        return {p: m.client_id for m in self.members for p in m.partitions}


def group_description(group: str, found: ConsumerGroupDescription, topic: str) -> GroupDescription:
    """librdkafka's description of a group, with the partitions of `topic` each member has."""
    members = []
    for m in found.members:
        assigned = m.assignment.topic_partitions if m.assignment else []
        partitions = tuple(sorted(tp.partition for tp in assigned if tp.topic == topic))
        members.append(Member(m.member_id, m.client_id, m.host, partitions))
    members.sort(key=lambda m: (m.partitions[:1] or (PARTITIONS,), m.client_id))
    state = found.state.name if found.state is not None else "UNKNOWN"
    return GroupDescription(group, _STATE_NAMES.get(state, state.title()), tuple(members))


# librdkafka's state names -> the names the classic protocol (and this view) has always used.
_STATE_NAMES = {
    "PREPARING_REBALANCING": "PreparingRebalance",
    "COMPLETING_REBALANCING": "CompletingRebalance",
}


class ClusterInspector:
    """Kafka's admin API and an offsets consumer, opened on first use, closed by `close()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._cached: tuple[float, GroupDescription] | None = None
        self._described: AdminClient | None = None  # librdkafka's, used from a thread

    async def _open(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        async with self._lock:
            if self._admin is None or self._consumer is None:
                admin = AIOKafkaAdminClient(**aiokafka_kwargs(self.settings))
                consumer = AIOKafkaConsumer(
                    **aiokafka_kwargs(self.settings),
                    isolation_level="read_committed",  # end offsets are last stable offsets
                    enable_auto_commit=False,
                )
                # Never cut short mid-start (aiokafka would leak the bootstrap connection).
                await start_or_stop(admin)
                try:
                    await start_or_stop(consumer)
                except BaseException:
                    await stop_quietly(admin)
                    raise
                self._admin, self._consumer = admin, consumer
            return self._admin, self._consumer

    async def close(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        if admin is not None:
            await admin.close()
        if consumer is not None:
            await consumer.stop()

    async def describe(
        self, group: str | None = None, topic: str | None = None
    ) -> GroupDescription:
        """The group as its coordinator sees it now (a group never seen is "Dead", no members);
        by default the namespace's worker group, on its commands topic.

        Through librdkafka's admin client: it describes both kinds of group, the workers'
        (KIP-848, ConsumerGroupDescribe) and the mirror's (classic, DescribeGroups), which
        aiokafka's admin client cannot."""
        names = self.settings.names
        workers = group is None or (group == names.worker_group and topic in (None, names.commands))
        group = group or names.worker_group
        topic = topic or names.commands
        for attempt in range(COORDINATOR_RETRIES):
            try:
                description = await asyncio.to_thread(self._describe, group, topic)
                break
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() == KafkaError.GROUP_ID_NOT_FOUND:
                    description = GroupDescription(group, "Dead", ())
                    break
                if error.code() not in COORDINATOR_MOVING or attempt == COORDINATOR_RETRIES - 1:
                    raise
            # The group's coordinator is loading or has just moved (a fresh broker, a
            # restart): it answers within a second or two.
            await asyncio.sleep(0.3)
        if workers:
            self._cached = (time.monotonic(), description)
        return description

    def _describe(self, group: str, topic: str) -> GroupDescription:
        if self._described is None:
            self._described = AdminClient(librdkafka_config(self.settings))
        future = self._described.describe_consumer_groups([group], request_timeout=10)[group]
        return group_description(group, future.result(), topic)

    async def cached_description(
        self, max_age_s: float = DESCRIPTION_MAX_AGE_S
    ) -> GroupDescription:
        """The worker group's description, from cache when younger than `max_age_s`."""
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < max_age_s:
            return cached[1]
        return await self.describe()

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        """Partition → the group's committed offset on `topic` (absent: never committed).

        Offsets a worker commits inside a transaction appear here only once it commits.
        """
        admin, _ = await self._open()
        offsets = await admin.list_consumer_group_offsets(group)
        return {
            tp.partition: o.offset
            for tp, o in offsets.items()
            if tp.topic == topic and o.offset >= 0
        }

    async def partition_counts(self, topics: list[str]) -> dict[str, int]:
        """Topic → its partition count, from the broker (topics that do not exist are absent)."""
        admin, _ = await self._open()
        counts = {}
        for t in await admin.describe_topics(topics):
            if t.get("error_code", 0) == 0:
                counts[t["topic"]] = len(t["partitions"])
        return counts

    async def end_offsets(self, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
        """Partition → its last stable offset (read_committed: open transactions excluded)."""
        _, consumer = await self._open()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: offset for tp, offset in ends.items()}

    async def beginning_offsets(self, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
        """Partition → its first offset still held (retention deletes from the start)."""
        _, consumer = await self._open()
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        starts = await consumer.beginning_offsets(tps)
        return {tp.partition: offset for tp, offset in starts.items()}


async def live_executions(pool: asyncpg.Pool) -> dict[int, int] | None:
    """Partition → live executions, from the mirror's rows; None before migration 003."""
    try:
        rows = await pool.fetch(LIVE_PER_PARTITION)
    except asyncpg.UndefinedColumnError:
        return None
    return {r["kafka_partition"]: r["live"] for r in rows}


async def cluster_view(
    settings: Settings,
    pool: asyncpg.Pool | None = None,
    *,
    inspector: ClusterInspector | None = None,
) -> dict[str, Any]:
    """The whole view as plain JSON-ready data (see the module docstring for its sources)."""
    own = inspector is None
    inspector = inspector or ClusterInspector(settings)
    n = settings.names
    try:
        counts = await inspector.partition_counts([n.commands, n.events, n.state, n.dlq])
        # Every partition that exists, past PARTITIONS too: that is where unserved work sits.
        commands = counts.get(n.commands, PARTITIONS)
        workers = await inspector.describe(n.worker_group, n.commands)
        committed = await inspector.committed(n.worker_group, n.commands)
        starts = await inspector.beginning_offsets(n.commands, commands)
        ends = await inspector.end_offsets(n.commands, commands)
        mirror = await inspector.describe(n.mirror_group, n.events)
        mirror_committed = await inspector.committed(n.mirror_group, n.events)
        event_ends = await inspector.end_offsets(n.events, counts.get(n.events, PARTITIONS))
    finally:
        if own:
            await inspector.close()
    live = await live_executions(pool) if pool is not None else None
    return build_view(
        workers, committed, starts, ends, mirror, mirror_committed, event_ends, live,
        partition_counts=counts, names=n,
    )  # fmt: skip


def build_view(
    workers: GroupDescription,
    committed: dict[int, int],
    starts: dict[int, int],
    ends: dict[int, int],
    mirror: GroupDescription,
    mirror_committed: dict[int, int],
    event_ends: dict[int, int],
    live: dict[int, int] | None,
    *,
    partition_counts: Mapping[str, int] | None = None,
    names: Names = DEFAULT_NAMES,
) -> dict[str, Any]:
    """Assemble the view from what was read (pure, so the shape is easy to test).

    `partition_counts` (topic → partitions in Kafka) adds the partitions of cerebelum.commands
    past PARTITIONS, which no worker serves, and the problems `partition_count_problems` finds.
    """
    counts = partition_counts or {}
    total = max(PARTITIONS, counts.get(names.commands, PARTITIONS))
    owners = workers.owners()
    partitions: list[dict[str, Any]] = []
    for p in range(total):
        # A partition the group never committed is read from its first offset (earliest).
        position = max(committed.get(p, 0), starts.get(p, 0))
        partitions.append({
            "partition": p,
            "owner": owners.get(p),
            "committed": committed.get(p),
            "end": ends.get(p, 0),
            "lag": max(0, ends.get(p, 0) - position),
            "live_executions": None if live is None else live.get(p, 0),
        })  # fmt: skip
    members: list[dict[str, Any]] = []
    for m in workers.members:
        mine = [partitions[p] for p in m.partitions if p < total]
        members.append({
            "client_id": m.client_id,
            "member_id": m.member_id,
            "host": m.host,
            "partitions": list(m.partitions),
            "lag": sum(x["lag"] for x in mine),
            "live_executions": None if live is None else sum(x["live_executions"] for x in mine),
        })  # fmt: skip
    return {
        "namespace": names.namespace,
        "group": workers.group,
        "state": workers.state,
        "workers": members,
        "unowned_partitions": [p for p in range(total) if p not in owners],
        # Ids map onto 0..PARTITIONS-1 only: past that, an owner is assigned but serves nothing.
        "unserved_partitions": list(range(PARTITIONS, total)),
        "partition_problems": partition_count_problems(counts, names=names),
        "lag": sum(x["lag"] for x in partitions),
        "live_executions": None if live is None else sum(live.values()),
        "partitions": partitions,
        "mirror": mirror_view(mirror, mirror_committed, event_ends),
    }


def mirror_view(
    mirror: GroupDescription, committed: dict[int, int], ends: dict[int, int]
) -> dict[str, Any]:
    """The mirror group's state and lag (events in Kafka not yet in PostgreSQL, estimated).

    Workers write cerebelum.events in transactions, and each commit leaves a marker offset after
    the transaction's last event; the mirror commits the offset after that last event, so a
    caught-up partition is one offset short of its end. One offset per partition is not lag.
    """
    behind = {}
    for p, end in ends.items():
        lag = max(0, end - committed.get(p, 0) - (1 if p in committed else 0))
        if lag:
            behind[p] = lag
    return {
        "group": mirror.group,
        "state": mirror.state,
        "members": [m.client_id for m in mirror.members],
        "lag": sum(behind.values()),
        "behind": behind,
    }
