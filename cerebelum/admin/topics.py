"""`cerebelum topics apply`: create the declared topics, check the ones that exist.

A topic that exists with another partition count is an error, never ignored: the partition
count decides which partition an execution id maps to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from cerebelum.errors import CerebelumError

DEFAULT_DECLARATIONS = Path(__file__).resolve().parents[2] / "topics" / "topics.json"


class TopicMismatch(CerebelumError):
    pass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


def load_declarations(path: Path = DEFAULT_DECLARATIONS) -> list[TopicSpec]:
    doc = json.loads(path.read_text())
    return [
        TopicSpec(t["name"], t["partitions"], t["replication_factor"], dict(t.get("configs", {})))
        for t in doc["topics"]
    ]


async def apply_topics(
    bootstrap: str, specs: list[TopicSpec], replication_factor: int | None = None
) -> list[str]:
    """Create missing topics; raise TopicMismatch for a wrong partition count. Returns a report."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    report: list[str] = []
    try:
        existing = await _partition_counts(admin, [s.name for s in specs])
        missing = [s for s in specs if s.name not in existing]
        for spec in specs:
            have = existing.get(spec.name)
            if have is not None and have != spec.partitions:
                raise TopicMismatch(
                    f"topic {spec.name} has {have} partitions, declared {spec.partitions}: "
                    "executions would map to the wrong partitions. Recreate it or fix topics/."
                )
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
                    replication_factor or s.replication_factor,
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
