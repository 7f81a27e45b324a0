"""Reading Cerebelum's topics back in tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from cerebelum.admin.cluster import ClusterInspector
from cerebelum.api.tokens import token_line
from cerebelum.client import partition_for
from cerebelum.config import ApiSettings, Settings
from cerebelum.constants import PARTITIONS


async def end_offsets(settings: Settings, topic: str | None = None) -> dict[TopicPartition, int]:
    """The end offsets of `topic` (the namespace's events topic unless given)."""
    topic = topic or settings.names.events
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        return await consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
    finally:
        await consumer.stop()


async def events_since(
    settings: Settings, since: dict[TopicPartition, int], ids: set[str]
) -> dict[str, list[dict]]:
    """Every committed event of `ids`, read from the offsets in `since` to the current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed"
    )
    await consumer.start()
    out: dict[str, list[dict]] = {eid: [] for eid in ids}
    try:
        wanted = {
            tp: off
            for tp, off in since.items()
            if tp.partition in {partition_for(eid) for eid in ids}
        }
        consumer.assign(list(wanted))
        for tp, offset in wanted.items():
            consumer.seek(tp, offset)
        ends = await consumer.end_offsets(list(wanted))
        while [tp for tp in wanted if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    key = r.key.decode()
                    if key in out:
                        out[key].append(orjson.loads(r.value))
        return out
    finally:
        await consumer.stop()


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def assert_gapless(events: list[dict]) -> None:
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))


def assert_results_recorded_once(events: list[dict]) -> None:
    """Each dispatch (StepScheduled, or StepRescheduled after an owner change; a child node's
    ChildrenStarted) is answered by at most one StepCompleted/StepFailed."""
    open_steps: dict[str, int] = {}
    for e in events:
        if e["type"] in ("StepScheduled", "StepRescheduled", "ChildrenStarted"):
            open_steps[e["step"]] = e["version"]
        elif e["type"] in ("StepCompleted", "StepFailed") and "signal" not in e:
            assert e["step"] in open_steps, f"{e['step']} answered twice: {e}"
            del open_steps[e["step"]]


@asynccontextmanager
async def worker_member(settings: Settings, worker_id: str) -> AsyncIterator[None]:
    """A member of the worker group named as worker `worker_id` is, that owns no partition.

    It joins as the workers do (KIP-848) but subscribes to cerebelum.workflows, not
    cerebelum.commands, so the group's assignor gives it nothing to run and real workers keep
    their partitions; to the group's description it is a live worker (client id
    "cerebelum-worker:<worker id>"). Leaves the group on exit.
    """
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": settings.names.worker_group,
            "group.protocol": "consumer",
            "client.id": settings.names.worker_client_id(worker_id),
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.names.workflows])
    joined, leave = threading.Event(), threading.Event()

    def member() -> None:  # the consumer belongs to this thread (confluent-kafka serialises)
        while not leave.is_set():
            consumer.poll(0.1)
            if consumer.assignment():
                joined.set()
        consumer.close()

    thread = threading.Thread(target=member, daemon=True)
    thread.start()
    try:
        if not await asyncio.to_thread(joined.wait, 30):
            raise TimeoutError(f"worker member {worker_id} did not join within 30 s")
        yield
    finally:
        leave.set()
        await asyncio.to_thread(thread.join)


async def live_workers(settings: Settings) -> set[str]:
    """The client ids of the worker group's members now."""
    inspector = ClusterInspector(settings)
    try:
        return {m.client_id for m in (await inspector.describe()).members}
    finally:
        await inspector.close()


async def wait_for_workers(settings: Settings, client_ids: set[str], timeout: float = 30) -> None:
    """Until the worker group's members are exactly `client_ids` (a member an earlier test
    killed lingers for a session timeout)."""
    async with asyncio.timeout(timeout):
        while await live_workers(settings) != client_ids:
            await asyncio.sleep(0.3)


# The API's tests authenticate with this admin token (a test secret, nothing else accepts it).
ADMIN_TOKEN = "cbl_tests-admin-token"
API_HEADERS = {"authorization": f"Bearer {ADMIN_TOKEN}"}
JSON = {"content-type": "application/json"}


def api_settings(directory: Path, tokens: dict[str, list[str]] | None = None) -> ApiSettings:
    """ApiSettings whose tokens file, written in `directory`, holds ADMIN_TOKEN and `tokens`
    (token -> scopes; each named after its token)."""
    lines = [token_line("tests-admin", ["admin"], ADMIN_TOKEN)]
    lines += [token_line(token.replace("_", "-"), scopes, token)
              for token, scopes in (tokens or {}).items()]  # fmt: skip
    path = directory / "api-tokens"
    path.write_text("\n".join(lines) + "\n")
    return ApiSettings(tokens_file=str(path))


@asynccontextmanager
async def in_process_api(settings: Settings, directory: Path) -> AsyncIterator[Any]:
    """An httpx client of the API app run in this process (its lifespan too: PostgreSQL pool,
    Kafka client), authenticated with ADMIN_TOKEN (its tokens file written in `directory`)."""
    import httpx

    from cerebelum.api import create_app

    app = create_app(settings, api_settings(directory))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=API_HEADERS
        ) as http:
            yield http


_HANDED_OUT: set[int] = set()


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port(run: int = 1) -> int:
    """A port p on 127.0.0.1 with p .. p+run-1 free now, below the kernel's ephemeral range.

    A port from bind(0) is an ephemeral one: by the time the test's process listens on it, a client
    connection elsewhere on the box may hold it as its local port, and the listen fails (CI saw
    PostgreSQL refuse to start on such a port). Below the range only explicit binds compete.
    """
    import random
    import socket

    def free(port: int) -> bool:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    ceiling = _ephemeral_floor() - run
    for _ in range(1000):
        base = random.randrange(20_000, ceiling)
        wanted = range(base, base + run)
        if not _HANDED_OUT.intersection(wanted) and all(free(port) for port in wanted):
            _HANDED_OUT.update(wanted)  # two calls before either port is bound differ
            return base
    raise RuntimeError(f"no {run} consecutive free ports below {ceiling}")


async def wait_ready(url: str, timeout: float = 60) -> None:
    """Until the API process at `url` answers /readyz 200 (it connects to its services)."""
    import httpx

    async with httpx.AsyncClient(base_url=url) as http, asyncio.timeout(timeout):
        while True:
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.3)
