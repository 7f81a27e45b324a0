"""`cerebelum topics apply`: create the declared topics, check the ones that exist.

A topic that exists with another partition count is an error, never ignored: the partition
count decides which partition an execution id maps to. `partition_count_problems` says so in
words for every process that reads the counts (topics apply, the cluster view, verify, and a
worker before it joins the group).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from cerebelum.config import Settings
from cerebelum.constants import DEFAULT_NAMES, Names
from cerebelum.errors import CerebelumError
from cerebelum.resources import TOPIC_DECLARATIONS
from cerebelum.security.kafka import aiokafka_kwargs

# topics/topics.json, shipped inside the package (cerebelum/resources.py).
DEFAULT_DECLARATIONS = TOPIC_DECLARATIONS


class TopicMismatch(CerebelumError):
    pass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


def load_declarations(
    path: Traversable = DEFAULT_DECLARATIONS, names: Names = DEFAULT_NAMES
) -> list[TopicSpec]:
    """The declared topics. The file names the default namespace's topics (cerebelum.commands,
    ...); with `names`, each is given its namespace's name (cerebelum.<ns>.commands, ...)."""
    doc = json.loads(path.read_text())
    return [
        TopicSpec(
            names.topic(t["name"]),
            t["partitions"],
            t["replication_factor"],
            dict(t.get("configs", {})),
        )
        for t in doc["topics"]
    ]


@functools.cache
def _shipped_declarations(names: Names) -> tuple[TopicSpec, ...]:
    return tuple(load_declarations(names=names))


def partition_count_problems(
    actual: Mapping[str, int],
    declared: Sequence[TopicSpec] | None = None,
    *,
    names: Names = DEFAULT_NAMES,
) -> list[str]:
    """One sentence per topic of `actual` (name → its partition count in Kafka) whose count is
    not the declared one (topics/topics.json, named for the namespace `names`, unless
    `declared` is given); [] when all agree. Topics not in `actual`, or not declared, are not
    checked.

    Execution ids map onto the declared count (murmur2(id) % 64): past it, partitions are served
    by no worker and what lands there never runs; short of it, ids map to partitions that do
    not exist.
    """
    specs = _shipped_declarations(names) if declared is None else declared
    problems = []
    for spec in specs:
        have = actual.get(spec.name)
        if have is None or have == spec.partitions:
            continue
        if have > spec.partitions:
            extra = _span(spec.partitions, have - 1)
            effect = f"partition(s) {extra} are served by no worker: what lands there never runs"
        else:
            effect = f"ids of partition(s) {_span(have, spec.partitions - 1)} have nowhere to go"
        problems.append(
            f"topic {spec.name} has {have} partitions, declared {spec.partitions}: {effect}. "
            f"A topic's partition count cannot change: recreate it with {spec.partitions}."
        )
    return problems


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def replicated(
    specs: Sequence[TopicSpec], replication_factor: int, min_insync_replicas: int | None = None
) -> list[TopicSpec]:
    """The declarations with another replication factor, and the `min.insync.replicas` that
    goes with it: `min_insync_replicas` if given, else RF - 1 capped at 2 (RF 3 -> 2, the usual
    production pair: one broker may be down and every acknowledged write is still on two)."""
    if replication_factor < 1:
        raise TopicMismatch(f"replication factor must be at least 1, not {replication_factor}")
    min_isr = min_insync_replicas or max(1, min(2, replication_factor - 1))
    if not 1 <= min_isr <= replication_factor:
        raise TopicMismatch(
            f"min.insync.replicas must be between 1 and the replication factor "
            f"({replication_factor}), not {min_isr}"
        )
    return [
        TopicSpec(
            s.name,
            s.partitions,
            replication_factor,
            {**s.configs, "min.insync.replicas": str(min_isr)},
        )
        for s in specs
    ]


async def apply_topics(
    target: Settings | str,
    specs: list[TopicSpec],
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
) -> list[str]:
    """Create missing topics; raise TopicMismatch for a wrong partition count. Returns a report.

    `target` is the settings to connect with, or a bare bootstrap (plaintext, no SASL). With
    `replication_factor`, every topic gets it (if created now) and the matching
    `min.insync.replicas` (see `replicated`), also set on the topics that exist."""
    if replication_factor is not None:
        specs = replicated(specs, replication_factor, min_insync_replicas)
    settings = target if isinstance(target, Settings) else Settings(kafka_bootstrap=target)
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(settings))
    await admin.start()
    report: list[str] = []
    try:
        existing = await _partition_counts(admin, [s.name for s in specs])
        missing = [s for s in specs if s.name not in existing]
        problems = partition_count_problems(existing, specs)
        if problems:
            # Every problem at once, and nothing changed: an operator fixes them in one go.
            raise TopicMismatch("\n".join(problems))
        for spec in specs:
            have = existing.get(spec.name)
            if have is not None:
                if await _update_configs(admin, spec):
                    report.append(f"updated  {spec.name} (configs set to the declared ones)")
                else:
                    report.append(f"ok       {spec.name} ({have} partitions)")
        if missing:
            new = [
                NewTopic(
                    s.name,
                    s.partitions,
                    s.replication_factor,
                    topic_configs=s.configs,
                )
                for s in missing
            ]
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another process created it meanwhile; checked below
            created = await _wait_for_partitions(admin, missing)
            for spec in missing:
                if created.get(spec.name) != spec.partitions:
                    raise TopicMismatch(f"topic {spec.name} was not created as declared")
                report.append(f"created  {spec.name} ({spec.partitions} partitions)")
    finally:
        await admin.close()
    return report


async def delete_namespace_topics(settings: Settings) -> list[str]:
    """Delete the topics of the settings' namespace that exist; return their names. For a
    namespace that is gone for good (the test suite's, one per module): its records go too."""
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(settings))
    await admin.start()
    try:
        existing = list(await _partition_counts(admin, list(settings.names.topics)))
        if existing:
            await admin.delete_topics(existing)
        return existing
    finally:
        await admin.close()


async def _wait_for_partitions(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec]
) -> dict[str, int]:
    """Partition counts once the new topics show all their partitions in the metadata: a fresh
    broker answers create_topics before every partition has a leader."""
    import asyncio

    counts: dict[str, int] = {}
    for _ in range(50):  # 50 x 0.2 s: a slow first start still settles within 10 s
        counts = await _partition_counts(admin, [s.name for s in specs])
        if all(counts.get(s.name) == s.partitions for s in specs):
            break
        await asyncio.sleep(0.2)
    return counts


async def _update_configs(admin: AIOKafkaAdminClient, spec: TopicSpec) -> bool:
    """Set the declared configs on an existing topic if any differ. True if it changed."""
    resource = ConfigResource(ConfigResourceType.TOPIC, spec.name, dict(spec.configs))
    (response,) = await admin.describe_configs([resource])
    current = {entry[0]: entry[1] for res in response.resources for entry in res[4]}
    if all(current.get(k) == v for k, v in spec.configs.items()):
        return False
    # AlterConfigs (not incremental) replaces the topic's whole config with the declared one.
    await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, spec.name, spec.configs)])
    return True


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    described = await admin.describe_topics(names)
    counts: dict[str, int] = {}
    for t in described:
        if t.get("error_code", 0) == 0:
            counts[t["topic"]] = len(t["partitions"])
    return counts
