"""A mirror started before its broker or database waits for them, one log line per attempt."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import pytest

from cerebelum.config import Settings
from cerebelum.mirror import Mirror
from tests.conftest import LOGS, ROOT, process_env
from tests.helpers import free_port
from tests.integration.test_mirror import (
    completed_history,
    end_offsets,
    produce,
    set_group_offsets,
)

pytestmark = pytest.mark.integration


def host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


@contextlib.asynccontextmanager
async def forwarder(port: int, target: tuple[str, int]) -> AsyncIterator[None]:
    """A TCP forwarder on 127.0.0.1:port to `target`: the service "comes up" on that port."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    open_writers: set[asyncio.StreamWriter] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*target)
        open_writers.update((writer, up_writer))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for writer in open_writers:
            writer.close()
        await server.wait_closed()


def with_port(database_url: str, port: int) -> str:
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))


async def wait_for(predicate: object, timeout: float) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("missing", ["kafka", "postgres"])
async def test_a_mirror_waits_for_its_services_then_works(
    settings: Settings,
    topics: None,
    database: None,
    caplog: pytest.LogCaptureFixture,
    missing: str,
) -> None:
    port = free_port()
    if missing == "kafka":
        waiting = replace(settings, kafka_bootstrap=f"127.0.0.1:{port}")
        target = host_port(settings.kafka_bootstrap)
    else:
        waiting = replace(settings, database_url=with_port(settings.database_url, port))
        target = host_port(urlsplit(settings.database_url).netloc.split("@")[-1])
    eid = f"startup-{missing}-{uuid.uuid4().hex[:8]}"
    group = f"test-mirror-startup-{uuid.uuid4().hex[:8]}"
    await set_group_offsets(settings, group, await end_offsets(settings))
    await produce(settings, [(eid, orjson.dumps(e)) for e in completed_history(eid)])

    caplog.set_level(logging.INFO)
    mirror = Mirror(waiting, group_id=group)
    starting = asyncio.get_running_loop().create_task(mirror.start())

    def retries() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "retrying in" in r.getMessage()]

    try:
        # Before the fix start() raised at once (KafkaConnectionError / ConnectionRefusedError).
        await wait_for(lambda: len(retries()) >= 3 or starting.done(), timeout=15)
        assert not starting.done(), starting.exception()
        waited = list(caplog.records)
        async with forwarder(port, target):
            await asyncio.wait_for(starting, 30)
            running = asyncio.get_running_loop().create_task(mirror.run())
            conn = await asyncpg.connect(settings.namespace_database_url)
            try:
                deadline = time.monotonic() + 30
                while (
                    await conn.fetchval(
                        "SELECT last_version FROM executions WHERE execution_id = $1", eid
                    )
                    != 6
                ):
                    assert time.monotonic() < deadline, "not mirrored"
                    assert not running.done(), running.exception()
                    await asyncio.sleep(0.1)
            finally:
                await conn.close()
            await mirror.stop()
            await running
    finally:
        if not starting.done():
            starting.cancel()
        await mirror.stop()

    # One line per attempt: no traceback, nothing from the client library besides ours. (Only
    # records about this mirror's address count: clients other tests abandoned may still be
    # retrying elsewhere in this process.)
    ours = [r for r in waited if str(port) in r.getMessage() or r.name.startswith("cerebelum")]
    assert all(r.exc_info is None for r in ours)
    assert not [r for r in ours if r.name.startswith("aiokafka") and r.levelno >= logging.ERROR]
    attempts = [r.getMessage() for r in waited if "retrying in" in r.getMessage()]
    assert all(("Kafka" if missing == "kafka" else "PostgreSQL") in m for m in attempts)


@pytest.mark.parametrize("missing", ["kafka", "postgres"])
def test_cerebelum_mirror_waits_and_exits_cleanly_on_sigterm(
    settings: Settings, missing: str
) -> None:
    port = free_port()
    env = process_env(settings)
    if missing == "kafka":
        env["CEREBELUM_KAFKA"] = f"127.0.0.1:{port}"
    else:
        env["CEREBELUM_DATABASE_URL"] = with_port(settings.database_url, port)
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"mirror-waits-for-{missing}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cerebelum", "mirror"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while log.read_text().count("retrying in") < 2:
            # Before the fix the process exited at once with a traceback.
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert "Traceback" not in output, output
