"""Migrations: in order, once, each in its own transaction, safe to run concurrently."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from cerebelum.config import Settings
from cerebelum.db.migrate import MigrationError, applied_migrations, discover, migrate

pytestmark = pytest.mark.integration


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
async def fresh_database(settings: Settings) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """A factory of empty databases (dropped at the end), returning their URLs."""
    created: list[str] = []
    admin = await asyncpg.connect(settings.database_url)

    async def make() -> str:
        name = f"cerebelum_test_{uuid.uuid4().hex[:12]}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return with_database(settings.database_url, name)

    try:
        yield make
    finally:
        for name in created:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def schema_of(url: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT c.relname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' ORDER BY c.relname"
        )
        return [(r["relname"], r["relkind"]) for r in rows]
    finally:
        await conn.close()


async def test_migrate_twice_changes_nothing(fresh_database: Callable[[], Awaitable[str]]) -> None:
    url = await fresh_database()
    every = [m.name for m in discover()]
    assert every[:2] == ["001_events.sql", "002_executions.sql"]

    assert await migrate(url) == every
    schema = await schema_of(url)
    recorded = await applied_migrations(url)

    assert await migrate(url) == []
    assert await schema_of(url) == schema
    assert await applied_migrations(url) == recorded == [(m.version, m.name) for m in discover()]

    names = {name for name, _ in schema}
    assert {"events", "executions", "schema_migrations"} <= names
    assert {f"events_p{p:02d}" for p in range(64)} <= names
    assert "events_p64" not in names


async def test_concurrent_runs_apply_each_migration_once(
    fresh_database: Callable[[], Awaitable[str]],
) -> None:
    url = await fresh_database()
    results = await asyncio.gather(*(migrate(url) for _ in range(4)))
    applied = [name for result in results for name in result]
    assert sorted(applied) == sorted(m.name for m in discover())  # each exactly once overall


async def test_a_failing_migration_rolls_back_alone(
    fresh_database: Callable[[], Awaitable[str]], tmp_path: Path
) -> None:
    url = await fresh_database()
    (tmp_path / "001_first.sql").write_text("CREATE TABLE first (x int);")
    (tmp_path / "002_broken.sql").write_text("CREATE TABLE second (x int); SELECT no_such_fn();")
    with pytest.raises(MigrationError, match=r"002_broken\.sql"):
        await migrate(url, tmp_path)
    assert await applied_migrations(url) == [(1, "001_first.sql")]
    names = {name for name, _ in await schema_of(url)}
    assert "first" in names and "second" not in names

    (tmp_path / "002_broken.sql").write_text("CREATE TABLE second (x int);")
    assert await migrate(url, tmp_path) == ["002_broken.sql"]


def test_discover_refuses_ambiguous_folders(tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("")
    (tmp_path / "001_b.sql").write_text("")
    with pytest.raises(MigrationError, match="share version 1"):
        discover(tmp_path)
    (tmp_path / "001_b.sql").unlink()
    (tmp_path / "notes.sql").write_text("")
    with pytest.raises(MigrationError, match=r"NNN_name\.sql"):
        discover(tmp_path)


def test_discover_refuses_a_missing_or_empty_folder(tmp_path: Path) -> None:
    # A package installed without its data must fail loudly, never report "nothing to apply".
    with pytest.raises(MigrationError, match="no migrations folder"):
        discover(tmp_path / "absent")
    with pytest.raises(MigrationError, match="no migrations"):
        discover(tmp_path)


def test_the_shipped_migrations_are_the_top_level_sql_folder() -> None:
    from tests.conftest import ROOT

    assert [m.name for m in discover()] == sorted(p.name for p in (ROOT / "sql").glob("*.sql"))
