"""Session fixtures: the real Kafka broker and PostgreSQL, topics, schema, and process factories.

Endpoints come from CEREBELUM_KAFKA / CEREBELUM_DATABASE_URL when set; otherwise the local dev
services are started (idempotently) with `cerebelum dev up`'s code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cerebelum.config import Settings

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / ".dev" / "test-logs"

# Short session timeout: a killed worker's partitions move in seconds, keeping fault tests short.
TEST_SESSION_TIMEOUT_MS = 6_000


@pytest.fixture(scope="session")
def settings() -> Settings:
    env = Settings.from_env()
    if "CEREBELUM_KAFKA" not in os.environ:
        from cerebelum.dev.services import up

        endpoints = up(ROOT)
        env = replace(
            env, kafka_bootstrap=endpoints.kafka_bootstrap, database_url=endpoints.database_url
        )
    return replace(env, session_timeout_ms=TEST_SESSION_TIMEOUT_MS, heartbeat_interval_ms=1_000)


@pytest.fixture(scope="session")
async def topics(settings: Settings) -> None:
    from cerebelum.admin.topics import apply_topics, load_declarations

    await apply_topics(settings, load_declarations())


@pytest.fixture(scope="session")
async def database(settings: Settings) -> None:
    from cerebelum.db.migrate import migrate

    await migrate(settings.database_url)


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CEREBELUM_KAFKA=settings.kafka_bootstrap,
        CEREBELUM_DATABASE_URL=settings.database_url,
        CEREBELUM_SESSION_TIMEOUT_MS=str(settings.session_timeout_ms),
        CEREBELUM_HEARTBEAT_INTERVAL_MS=str(settings.heartbeat_interval_ms),
        CEREBELUM_SHUTDOWN_GRACE_S="5",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


class Processes:
    """Cerebelum processes started by a test; stopped (SIGTERM, then SIGKILL) at its end."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        LOGS.mkdir(parents=True, exist_ok=True)
        log = LOGS / f"{self.name}-{len(self.procs)}-{args[0]}.log"
        # Tests can drive the processes of another checkout (its own .venv), to show that a
        # test fails on an older revision: CEREBELUM_TEST_PROCESS_ROOT=/path/to/checkout.
        root = Path(os.environ.get("CEREBELUM_TEST_PROCESS_ROOT") or ROOT)
        python = str(root / ".venv" / "bin" / "python") if root != ROOT else sys.executable
        with log.open("wb") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                [python, "-m", "cerebelum", *args],
                cwd=root,
                env=process_env(self.settings, PYTHONPATH=str(root), **env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def worker(self, app: str = "tests.apps", **env: str) -> subprocess.Popen[bytes]:
        return self.spawn("worker", "--app", app, **env)

    def mirror(self) -> subprocess.Popen[bytes]:
        return self.spawn("mirror")

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def processes(
    settings: Settings, topics: None, request: pytest.FixtureRequest
) -> Iterator[Processes]:
    procs = Processes(settings, request.node.name)
    yield procs
    procs.stop_all()


@pytest.fixture
async def client(settings: Settings, topics: None) -> AsyncIterator[Client]:  # noqa: F821
    from cerebelum.client import Client

    async with Client(settings) as c:
        await c.listen()
        yield c


@pytest.fixture
def unique() -> Callable[[str], str]:
    import uuid

    run = uuid.uuid4().hex[:8]
    return lambda name: f"{name}-{run}"
