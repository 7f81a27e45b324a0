"""DBOS Transact (PyPI dbos) on a PostgreSQL of its own.

Its server is a second PostgreSQL started with Cerebelum's own dev code (cerebelum/dev/postgres.py,
same settings: fsync and synchronous_commit on) under .dev/compare-dbos on its own port, so its
CPU is DBOS's alone. Each run drops and recreates DBOS's system database; DBOS creates its tables
when the application launches.

DBOS is a library: the application process starts workflows and runs them. Here that process is
the generator (bench/compare/driver.py, which imports engines/dbos_app.py): its CPU is both the
client's and the engine's worker's, and is reported as the `client` process like the others'.
A start is `DBOS.start_workflow_async(w3, ...)` under `SetWorkflowID(execution_id)` (idempotent by
id, like a Cerebelum start-command), completion is `await handle.get_result()`.
"""

from __future__ import annotations

import asyncio
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.common.base import ROOT, say
from bench.common.procfs import Tracked
from bench.compare.engines import Engine, EngineClient
from cerebelum.dev import postgres

PG_ROOT = ROOT / ".dev" / "compare-dbos"
DATABASE = "dbos_w3"
# DBOS's default pool (20) is what an application gets unless it tunes it; we do not tune.
APP_NAME = "cerebelum-bench-w3"


class DbosEngine(Engine):
    kind = "dbos"

    def __init__(self, pg_port: int) -> None:
        self.name = "dbos"
        self.layout = postgres.PostgresLayout(root=PG_ROOT, port=pg_port)
        self._started_pg = False
        self._pg_version = ""

    @property
    def url(self) -> str:
        return f"postgresql://{postgres.DB_USER}@{postgres.HOST}:{self.layout.port}/{DATABASE}"

    def prepare(self) -> None:
        if not postgres.is_running(self.layout):
            postgres.start(self.layout)
            self._started_pg = True

    def up(self, logs: Path) -> None:
        self.prepare()
        asyncio.run(self._recreate_database())
        say(f"dbos: fresh database {self.url}")

    async def _recreate_database(self) -> None:
        admin = await asyncpg.connect(
            f"postgresql://{postgres.DB_USER}@{postgres.HOST}:{self.layout.port}/postgres"
        )
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{DATABASE}"')
            self._pg_version = str(await admin.fetchval("SHOW server_version"))
        finally:
            await admin.close()

    def tracked(self) -> list[Tracked]:
        pid = postgres.server_pid(self.layout)
        if pid is None:
            raise RuntimeError(f"DBOS's PostgreSQL on port {self.layout.port} is not running")
        return [Tracked("postgres", pid, tree=True)]

    def driver_argv(self, base: list[str]) -> list[str]:
        return [*base, "--config", orjson.dumps({"system_database_url": self.url}).decode()]

    def down(self) -> None:
        """The server stays up between runs (its idle CPU is reported as a bystander's)."""

    def close(self) -> None:
        if self._started_pg:
            postgres.stop(self.layout)

    def describe(self) -> dict[str, Any]:
        return {
            "dbos": metadata.version("dbos"),
            "postgresql": self._pg_version,
            "postgres_port": self.layout.port,
            "processes": "PostgreSQL (postmaster and backends); the application process is "
            "the generator (client) itself",
        }


class Client(EngineClient):
    def __init__(self, config: dict[str, Any]) -> None:
        self.url = config["system_database_url"]

    async def connect(self) -> None:
        from dbos import DBOS

        from bench.compare.engines import dbos_app  # noqa: F401  (registers the workflow)

        DBOS(config={"name": APP_NAME, "system_database_url": self.url, "log_level": "WARNING"})
        DBOS.launch()  # blocks the loop while it migrates: nothing else runs yet

    async def close(self) -> None:
        from dbos import DBOS

        DBOS.destroy()

    async def execute(self, execution_id: str, i: int) -> Any:
        from dbos import DBOS, SetWorkflowID

        from bench.compare.engines.dbos_app import w3

        with SetWorkflowID(execution_id):
            handle = await DBOS.start_workflow_async(w3, {"n": i})
        return await handle.get_result()
