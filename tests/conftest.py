"""Fixtures: the real Kafka broker and PostgreSQL, a namespace per test module (its topics and
schema), and process factories.

Endpoints come from CEREBELUM_KAFKA / CEREBELUM_DATABASE_URL when set; otherwise the local dev
services are started (idempotently) with `cerebelum dev up`'s code.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cerebelum.config import Settings

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / ".dev" / "test-logs"

T = TypeVar("T")

# Short session timeout: a killed worker's partitions move in seconds, keeping fault tests short.
TEST_SESSION_TIMEOUT_MS = 6_000


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    """The run's endpoints and timeouts, in the default namespace (`settings` is per module)."""
    env = Settings.from_env()
    if "CEREBELUM_KAFKA" not in os.environ:
        from cerebelum.dev.services import up

        endpoints = up(ROOT)
        env = replace(
            env, kafka_bootstrap=endpoints.kafka_bootstrap, database_url=endpoints.database_url
        )
    return replace(env, session_timeout_ms=TEST_SESSION_TIMEOUT_MS, heartbeat_interval_ms=1_000)


# One namespace per test module: its own topics, worker and mirror groups, and schema, so two
# runs on one broker (or two modules) never share a group or see each other's records. The
# run's random part keeps concurrent runs apart; the counter, the modules of one run.
_RUN = uuid.uuid4().hex[:8]
_modules = itertools.count(1)


class Namespaces:
    """Hands each test module a namespace whose topics are applied and schema migrated, and
    removes it (topics deleted, schema dropped) after the module: a broker that kept every
    module's 257 partitions would carry thousands after a run.

    Making one costs ~0.7-1.1 s (topics) + ~0.4 s (migrations), measured on the dev services,
    which some forty modules would add to CI; so the next module's namespace is made while this
    one's tests run, and the last one's removed meanwhile, on a thread with its own event loop
    (the tests' loop is blocked by their synchronous waits). A module then waits only if its
    predecessor took less time than making a namespace.
    """

    def __init__(self, base: Settings) -> None:
        self.base = base
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="test-namespaces")
        self._next: Future[Settings] | None = None
        self._removals: list[Future[None]] = []
        # What it cost, written to LOGS/namespaces.log at the end: the seconds each module
        # waited for its namespace, and the seconds making and removing one took.
        self.waited: list[float] = []
        self.made: list[float] = []
        self.removed: list[float] = []

    def take(self) -> Settings:
        began = time.monotonic()
        ready = self._next or self._prepare()
        self._next = self._prepare()  # the following module's, made while this one runs
        settings = ready.result()
        self.waited.append(time.monotonic() - began)
        return settings

    def release(self, settings: Settings) -> None:
        removal = _timed(self.removed, _remove_namespace, settings)
        self._removals.append(self._thread.submit(removal))

    def close(self) -> None:
        if self._next is not None:
            self.release(self._next.result())
        for removal in self._removals:
            removal.result()
        self._thread.shutdown()
        LOGS.mkdir(parents=True, exist_ok=True)
        waits = " ".join(f"{w:.2f}" for w in self.waited)
        with (LOGS / "namespaces.log").open("a") as log:
            log.write(f"run {_RUN}: {len(self.waited)} namespaces taken; {_summary(self.waited)} "
                      f"waited ({waits}); made in {_summary(self.made)}; removed in "
                      f"{_summary(self.removed)}\n")  # fmt: skip

    def _prepare(self) -> Future[Settings]:
        settings = replace(self.base, namespace=f"t-{_RUN}-{next(_modules)}")
        return self._thread.submit(_timed(self.made, _make_namespace, settings))


def _timed(
    into: list[float], fn: Callable[[Settings], Coroutine[Any, Any, T]], settings: Settings
) -> Callable[[], T]:
    def run() -> T:
        began = time.monotonic()
        try:
            return asyncio.run(fn(settings))
        finally:
            into.append(time.monotonic() - began)

    return run


def _summary(seconds: list[float]) -> str:
    if not seconds:
        return "-"
    return (f"{sum(seconds):.1f} s in all (mean {sum(seconds) / len(seconds):.2f} s, "
            f"max {max(seconds):.2f} s)")  # fmt: skip


async def _make_namespace(settings: Settings) -> Settings:
    from cerebelum.admin.topics import apply_topics, load_declarations
    from cerebelum.db.migrate import migrate

    await apply_topics(settings, load_declarations(names=settings.names))
    await migrate(settings.namespace_database_url, schema=settings.names.schema)
    return settings


async def _remove_namespace(settings: Settings) -> None:
    from cerebelum.admin.topics import delete_namespace_topics
    from cerebelum.db.migrate import drop_schema

    await delete_namespace_topics(settings)
    assert settings.names.schema is not None  # never the default namespace's
    await drop_schema(settings.database_url, settings.names.schema)


@pytest.fixture(scope="session")
def namespaces(base_settings: Settings) -> Iterator[Namespaces]:
    pool = Namespaces(base_settings)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def settings(namespaces: Namespaces) -> Iterator[Settings]:
    """The run's settings in this module's namespace (`t-<run>-<n>`): its topics applied and
    its schema migrated; removed after the module."""
    settings = namespaces.take()
    yield settings
    namespaces.release(settings)


@pytest.fixture(scope="module")
def topics(settings: Settings) -> None:
    """The module's topics (applied with its namespace: `settings`)."""


@pytest.fixture(scope="module")
def database(settings: Settings) -> None:
    """The module's schema (migrated with its namespace: `settings`)."""


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CEREBELUM_NAMESPACE=settings.namespace,
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


def module_worker(name: str) -> Any:
    """A module-scoped `worker` fixture: one worker of tests.apps for all of a module's tests
    (its log named `name`). In the module: `worker = module_worker("limits")`."""

    @pytest.fixture(scope="module")
    def worker(settings: Settings, topics: None) -> Iterator[None]:
        procs = Processes(settings, name)
        procs.worker()
        yield
        procs.stop_all()

    return worker


@pytest.fixture
def processes(
    settings: Settings, topics: None, request: pytest.FixtureRequest
) -> Iterator[Processes]:
    procs = Processes(settings, request.node.name)
    yield procs
    procs.stop_all()


@pytest.fixture(scope="module")
async def api(
    settings: Settings, topics: None, database: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Any]:
    """An httpx client of the API app run in this process, with an admin token (one per
    test module: tests.helpers.in_process_api)."""
    from tests.helpers import in_process_api

    async with in_process_api(settings, tmp_path_factory.mktemp("api")) as http:
        yield http


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
