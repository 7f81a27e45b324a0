"""Cerebelum as bench/ runs it: one `cerebelum worker --app bench.app` and one `cerebelum mirror`,
on the broker and PostgreSQL named by CEREBELUM_KAFKA and CEREBELUM_DATABASE_URL.

`root` is the checkout whose worker and mirror run (its own .venv/bin/python, its own bench.app):
this one by default, another one to A/B two revisions in one run (`--cerebelum-root PATH`).

Up, in order:
    1. delete and recreate Cerebelum's topics (bench.common.reset_topics, which refuses the
       shared development broker), then the checkout's own `cerebelum topics apply`;
    2. drop and recreate a database of the checkout's own (compare_cerebelum or
       compare_cerebelum_REV on the same server), then its own `cerebelum db migrate`;
    3. start the mirror and the worker, wait until the worker owns all 64 partitions.
The client, in the generator process, is this checkout's: start-commands from a producer with
linger 0 (as bench/latency.py's lean harness), completion when the public `cerebelum.Client`'s
listener (read_committed, its own fetch settings) reads the execution's ExecutionCompleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.common.base import ROOT, say
from bench.common.probes import reset_topics
from bench.common.processes import Cluster, process_env, python_for
from bench.common.procfs import Tracked, pid_listening_on, port_of, service_processes
from bench.common.results import source_digest
from bench.compare.engines import Engine, EngineClient
from cerebelum.config import Settings


def git_revision(root: Path) -> str | None:
    result = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or None


class CerebelumEngine(Engine):
    kind = "cerebelum"

    def __init__(self, s: Settings, root: Path = ROOT) -> None:
        self.root = root.resolve()
        self.revision = git_revision(self.root)
        if self.root == ROOT:
            self.name = "cerebelum"
        else:
            self.name = f"cerebelum@{(self.revision or self.root.name)[:7]}"
            if not (self.root / ".venv" / "bin" / "python").exists():
                raise SystemExit(f"{self.root} has no .venv/bin/python (see bench/README.md)")
        database = "compare_" + re.sub(r"[^a-z0-9]+", "_", self.name.lower())
        self.s = replace(s, database_url=s.database_url.rsplit("/", 1)[0] + "/" + database)
        self.cluster: Cluster | None = None

    def up(self, logs: Path) -> None:
        asyncio.run(self._reset())
        self._cli("topics", "apply")
        self._cli("db", "migrate")
        self.cluster = Cluster(self.s, logs.name, self.root)
        self.cluster.logs = logs
        self.cluster.start_mirror()
        self.cluster.start_worker()
        self.cluster.wait_workers_ready()
        self.cluster.wait_mirror_ready()
        say(f"{self.name}: worker owns all partitions, mirror assigned ({self.root})")

    async def _reset(self) -> None:
        await reset_topics(self.s)
        database = self.s.database_url.rsplit("/", 1)[1]
        admin = await asyncpg.connect(self.s.database_url.rsplit("/", 1)[0] + "/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{database}"')
        finally:
            await admin.close()

    def _cli(self, *args: str) -> None:
        result = subprocess.run(
            [python_for(self.root), "-m", "cerebelum", *args], cwd=self.root,
            env=process_env(self.s, self.root), capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"cerebelum {' '.join(args)} failed: {result.stdout}{result.stderr}")

    def tracked(self) -> list[Tracked]:
        assert self.cluster is not None
        return service_processes(self.s) + self.cluster.tracked()

    def driver_argv(self, base: list[str]) -> list[str]:
        return [*base, "--config", orjson.dumps({"kafka": self.s.kafka_bootstrap}).decode()]

    def down(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def describe(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "revision": self.revision,
            "source_digest": source_digest(self.root),
            "kafka": broker_version(self.s),
            "database_url": self.s.database_url,
            "processes": "Kafka broker, PostgreSQL (postmaster and backends), 1 worker, 1 mirror",
        }


def broker_version(s: Settings) -> str | None:
    """The broker's Kafka version, from its command line (the dev broker's classpath runs
    through .cache/kafka/VERSION/; a distribution's through libs/kafka_2.13-VERSION.jar)."""
    pid = pid_listening_on(port_of(s.kafka_bootstrap))
    if pid is None:
        return None
    with contextlib.suppress(OSError):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        match = re.search(r"/kafka/(\d+\.\d+\.\d+)/|kafka_2\.\d+-(\d+\.\d+\.\d+)\.jar", cmdline)
        if match:
            return match.group(1) or match.group(2)
    return None


class Client(EngineClient):
    def __init__(self, config: dict[str, Any]) -> None:
        self.settings = Settings(kafka_bootstrap=config["kafka"])
        self._client: Any = None
        self._producer: Any = None

    async def connect(self) -> None:
        from aiokafka import AIOKafkaProducer

        from cerebelum.client import Client as CerebelumClient

        # Only the listener of the public client: its producer lingers 2 ms to batch bursts,
        # ours sends each start at once (linger 0), as bench/latency.py's lean harness does.
        self._client = CerebelumClient(self.settings)
        await self._client.listen()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
        )
        await self._producer.start()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        if self._client is not None:
            await self._client.close()

    async def execute(self, execution_id: str, i: int) -> Any:
        from cerebelum.constants import DEFAULT_NAMES
        from cerebelum.core.commands import start_command

        waiter = asyncio.ensure_future(self._client.wait(execution_id, timeout=None))
        try:
            ack = await self._producer.send(
                DEFAULT_NAMES.commands, start_command(execution_id, "w3", {"n": i}), execution_id.encode()
            )
            result = await waiter
            await ack  # long since acknowledged: the execution completed
        finally:
            waiter.cancel()  # the generator gave up on it (a timeout): stop waiting too
        if result.status != "completed":
            raise RuntimeError(f"execution {execution_id} {result.status}: {result.error}")
        return result.output
