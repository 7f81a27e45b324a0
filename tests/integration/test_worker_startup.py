"""A worker started while the broker is down waits for it (one line per attempt), then works."""

from __future__ import annotations

import asyncio
import time

import pytest

from cerebelum.client import Client
from cerebelum.config import Settings
from tests.conftest import LOGS, Processes
from tests.integration.test_mirror_startup import forwarder, free_port, host_port

pytestmark = pytest.mark.integration


async def test_a_worker_waits_for_the_broker_then_works(
    settings: Settings, processes: Processes, client: Client, unique
) -> None:
    port = free_port()
    worker = processes.worker(CEREBELUM_KAFKA=f"127.0.0.1:{port}")
    log = LOGS / f"{processes.name}-0-worker.log"

    def attempts() -> int:
        text = log.read_text() if log.exists() else ""
        return text.count("does not answer")

    deadline = time.monotonic() + 60
    while attempts() < 2:  # before the fix: the process exited at once on the bootstrap error
        assert worker.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the worker logged no retry"
        await asyncio.sleep(0.2)
    async with forwarder(port, host_port(settings.kafka_bootstrap)):
        result = await client.run("w3", {"n": 2}, unique("after-wait"), timeout=90)
    assert result.status == "completed" and result.output == {"n": 6}
    assert worker.poll() is None
    assert "Traceback" not in log.read_text()
