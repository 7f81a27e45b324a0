"""Two namespaces on one Kafka cluster and one PostgreSQL: two apps, nothing shared.

Namespace A's worker runs only `only-a` (tests/apps_ns_a.py), B's only `only-b`; each has its
mirror and its API. Starts complete in each; no record, group member, row or API answer of one
shows up in the other; a command naming the other namespace is dead-lettered with the reason.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from cerebelum.admin.cluster import ClusterInspector
from cerebelum.client import Client
from cerebelum.config import Settings
from cerebelum.constants import PARTITIONS
from cerebelum.core.commands import start_command
from cerebelum.errors import CommandRejected
from tests.conftest import Namespaces, Processes
from tests.helpers import in_process_api

pytestmark = pytest.mark.integration

# A fresh worker joins its group and restores 64 empty partitions within seconds; generous
# for a loaded CI box.
JOIN_TIMEOUT_S = 60
RUN_TIMEOUT_S = 60
# The mirror writes within a fetch wait or two of the records' commit.
MIRRORED_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def two(namespaces: Namespaces) -> Iterator[tuple[Settings, Settings]]:
    """Two namespaces of their own (topics applied, schemas migrated), removed after."""
    a, b = namespaces.take(), namespaces.take()
    yield a, b
    namespaces.release(a)
    namespaces.release(b)


@pytest.fixture
def apps(two: tuple[Settings, Settings], request: pytest.FixtureRequest) -> Iterator[None]:
    """In each namespace: its own app's worker, and a mirror."""
    a, b = two
    procs = [Processes(a, f"{request.node.name}-a"), Processes(b, f"{request.node.name}-b")]
    try:
        procs[0].worker("tests.apps_ns_a")
        procs[1].worker("tests.apps_ns_b")
        for p in procs:
            p.mirror()
        yield
    finally:
        for p in procs:
            p.stop_all()


@pytest.fixture
async def apis(
    two: tuple[Settings, Settings], tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    a, b = two
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        in_process_api(a, tmp_path / "a") as api_a,
        in_process_api(b, tmp_path / "b") as api_b,
    ):
        yield api_a, api_b


async def keys_on(settings: Settings, topic: str) -> set[str]:
    """The keys of every committed record on `topic` now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        keys: set[str] = set()
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                keys.update(r.key.decode() for r in records if r.key is not None)
        return keys
    finally:
        await consumer.stop()


async def rows(settings: Settings, query: str) -> set[str]:
    conn = await asyncpg.connect(settings.namespace_database_url)
    try:
        return {r[0] for r in await conn.fetch(query)}
    finally:
        await conn.close()


async def test_two_apps_in_two_namespaces_share_nothing(
    two: tuple[Settings, Settings], apps: None, apis: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    a, b = two
    api_a, api_b = apis
    assert a.names.commands != b.names.commands and a.names.schema != b.names.schema
    # Each worker joins its own namespace's group, alone there.
    worker_ids = {s.namespace: await _ids(s) for s in (a, b)}
    assert all(len(ids) == 1 for ids in worker_ids.values()), worker_ids

    run = uuid.uuid4().hex[:8]
    in_a, in_b = f"a-{run}", f"b-{run}"
    async with Client(a) as client_a, Client(a, namespace=b.namespace) as client_b:
        assert client_b.settings.names == b.names
        # 1. Each namespace runs its own app's workflow.
        done_a = await client_a.run("only-a", {"n": 1}, in_a, timeout=RUN_TIMEOUT_S)
        done_b = await client_b.run("only-b", {"n": 2}, in_b, timeout=RUN_TIMEOUT_S)
        assert (done_a.status, done_a.output) == ("completed", {"from": "a", "n": 1})
        assert (done_b.status, done_b.output) == ("completed", {"from": "b", "n": 2})

        # 2. B's workflow is not A's: A's worker refuses it (it never reaches B's worker).
        with pytest.raises(CommandRejected, match="only-b"):
            await client_a.run("only-b", {"n": 3}, f"a-refused-{run}", timeout=RUN_TIMEOUT_S)

        # 3. A command naming B, produced to A's topic (a misconfigured producer): refused.
        misplaced = f"a-misplaced-{run}"
        waiting = asyncio.ensure_future(client_a.wait(misplaced, timeout=RUN_TIMEOUT_S))
        await asyncio.sleep(0.2)
        value = start_command(misplaced, "only-a", {"n": 4}, namespace=b.namespace)
        await client_a.send_command(misplaced, value)
        with pytest.raises(CommandRejected) as refused:
            await waiting
        assert refused.value.reason == (
            f"command names namespace '{b.namespace}', but it was read from namespace "
            f"'{a.namespace}''s commands topic (produced to the wrong namespace)"
        )

    # Nothing crossed. Topics: each namespace's records are its own executions'.
    assert await keys_on(a, a.names.events) == {in_a}
    assert await keys_on(b, b.names.events) == {in_b}
    assert await keys_on(a, a.names.dlq) == {f"a-refused-{run}", misplaced}
    assert await keys_on(b, b.names.dlq) == set()
    # Groups: each has its own worker and mirror as members.
    for s in (a, b):
        inspector = ClusterInspector(s)
        try:
            mirror = await inspector.describe(s.names.mirror_group, s.names.events)
            workers = await inspector.describe()
        finally:
            await inspector.close()
        assert [m.client_id.startswith(s.names.mirror_group) for m in mirror.members] == [True]
        assert {m.client_id for m in workers.members} == {
            s.names.worker_client_id(w) for w in worker_ids[s.namespace]
        }
    # Schemas: each holds its own executions and dead letters.
    async with asyncio.timeout(MIRRORED_TIMEOUT_S):
        while len(await rows(a, "SELECT execution_id FROM dead_letters")) < 2:
            await asyncio.sleep(0.2)
    assert await rows(a, "SELECT execution_id FROM executions") == {in_a}
    assert await rows(b, "SELECT execution_id FROM executions") == {in_b}
    assert await rows(a, "SELECT execution_id FROM dead_letters") == {f"a-refused-{run}", misplaced}
    assert await rows(b, "SELECT execution_id FROM dead_letters") == set()

    # APIs: each serves and names its own namespace, and sees only its executions.
    for api, mine, other, s in ((api_a, in_a, in_b, a), (api_b, in_b, in_a, b)):
        assert (await api.get("/healthz")).json()["namespace"] == s.namespace
        found = await api.get(f"/executions/{mine}", params={"until": "terminal", "timeout": 30})
        assert found.status_code == 200 and found.json()["status"] == "completed"
        assert (await api.get(f"/executions/{other}")).status_code == 404
        listed = (await api.get("/executions")).json()["executions"]
        assert [row["execution_id"] for row in listed] == [mine]
        cluster = (await api.get("/cluster")).json()
        assert (cluster["namespace"], cluster["group"]) == (s.namespace, s.names.worker_group)


async def _ids(settings: Settings) -> set[str]:
    """The worker ids of the namespace's worker group's members (waited for: one joins)."""
    prefix = settings.names.worker_client_id_prefix
    inspector = ClusterInspector(settings)
    try:
        async with asyncio.timeout(JOIN_TIMEOUT_S):
            while True:
                members = (await inspector.describe()).members
                ids = {m.client_id.removeprefix(prefix) for m in members}
                if ids:
                    return ids
                await asyncio.sleep(0.3)
    finally:
        await inspector.close()


async def test_the_cli_makes_and_serves_the_namespace_it_is_given(
    base_settings: Settings, tmp_path: Path
) -> None:
    """`cerebelum --namespace NAME topics apply / db migrate`: that namespace's topics and
    schema, nothing of the environment's (CEREBELUM_NAMESPACE says another)."""
    from tests.conftest import _remove_namespace, process_env

    fresh = replace(base_settings, namespace=f"cli-{uuid.uuid4().hex[:8]}")
    env = process_env(replace(base_settings, namespace="elsewhere"))
    try:
        for args in (("topics", "apply"), ("db", "migrate")):
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "cerebelum", "--namespace", fresh.namespace, *args],
                env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        admin = AIOKafkaAdminClient(bootstrap_servers=fresh.kafka_bootstrap)
        await admin.start()
        try:
            listed = set(await admin.list_topics())
        finally:
            await admin.close()
        assert set(fresh.names.topics) <= listed
        assert not {t for t in listed if t.startswith("cerebelum.elsewhere.")}
        tables = "SELECT table_name FROM information_schema.tables WHERE table_schema = $1"
        conn = await asyncpg.connect(fresh.database_url)
        try:
            found = {r[0] for r in await conn.fetch(tables, fresh.names.schema)}
        finally:
            await conn.close()
        assert {"executions", "events", "dead_letters", "schema_migrations"} <= found
    finally:
        await _remove_namespace(fresh)
