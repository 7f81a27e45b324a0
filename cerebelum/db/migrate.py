"""Schema migrations from `sql/NNN_name.sql`, and the asyncpg pool every process uses.

The files ship inside the package (cerebelum/resources.py): a wheel migrates like a checkout.

`migrate(url, schema=...)` applies the pending files in order of NNN, in the schema the URL's
search_path names (a namespace's, Settings.namespace_database_url), first creating `schema`
if it is given and missing. For each pending file, in order:
    1. begin a transaction and take a transaction-scoped advisory lock, so concurrent runs
       (several mirrors starting at once) take turns;
    2. create `schema_migrations` if it is missing;
    3. skip the file if its version is recorded (another run applied it while we waited);
    4. run the file and record its version, name and time;
    5. commit, which releases the lock.
A file that fails rolls back alone and stops the run; the ones before it stay applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Any

import asyncpg
import orjson

from cerebelum.errors import CerebelumError
from cerebelum.resources import MIGRATIONS

# Any fixed 64-bit number; other code must not take advisory locks with this key.
MIGRATION_LOCK_KEY = 0x0CE2EB1B_0000_0001

_FILE_NAME = re.compile(r"^(\d{3,})_[A-Za-z0-9_\-]+\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(CerebelumError):
    """The sql/ folder is missing, empty or inconsistent (two files with one number), or a file
    failed."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Traversable  # a pathlib.Path, or a file inside the installed package


def discover(directory: Traversable = MIGRATIONS) -> list[Migration]:
    """The migration files in `directory`, in order of their number.

    No files at all is an error, not "nothing to apply": it means a broken install (the
    package without its data), and the schema would silently stay empty.
    """
    if not directory.is_dir():
        raise MigrationError(f"no migrations folder at {directory}: is the install complete?")
    found: dict[int, Migration] = {}
    files = sorted((f for f in directory.iterdir() if f.name.endswith(".sql")), key=_name)
    if not files:
        raise MigrationError(f"no migrations (NNN_name.sql) in {directory}")
    for path in files:
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{found[version].name} and {path.name} share version {version}")
        found[version] = Migration(version, path.name, path)
    return [found[v] for v in sorted(found)]


def _name(file: Traversable) -> str:
    return file.name


async def migrate(
    database_url: str, directory: Traversable = MIGRATIONS, *, schema: str | None = None
) -> list[str]:
    """Apply the pending migrations; return the names of those this call applied. `schema`:
    a namespace's schema (the one the URL's search_path names), created first if missing."""
    migrations = discover(directory)
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        if schema is not None:
            await _create_schema(conn, schema)
        applied_before = await _applied_versions(conn)
        applied: list[str] = []
        for migration in migrations:
            if migration.version in applied_before:
                continue
            if await _apply(conn, migration):
                applied.append(migration.name)
        return applied
    finally:
        await conn.close()


async def applied_migrations(database_url: str) -> list[tuple[int, str]]:
    """(version, name) of every recorded migration, in order."""
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        if not await _table_exists(conn):
            return []
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(r["version"], r["name"]) for r in rows]
    finally:
        await conn.close()


async def _create_schema(conn: asyncpg.Connection, schema: str) -> None:
    # Only when missing: CREATE SCHEMA IF NOT EXISTS still needs CREATE on the database, which
    # a least-privilege mirror (`db grant --for mirror`) does not have, and a lock-free look
    # first lets a run with nothing to do take no lock at all.
    if await conn.fetchval("SELECT true FROM pg_namespace WHERE nspname = $1", schema):
        return
    # Under the migrations' lock: two first runs at once would otherwise race on the name.
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        quoted = await conn.fetchval("SELECT quote_ident($1)", schema)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")


async def drop_schema(database_url: str, schema: str) -> None:
    """Drop a namespace's schema and everything in it (the test suite's, at a module's end)."""
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        quoted = await conn.fetchval("SELECT quote_ident($1)", schema)
        await conn.execute(f"DROP SCHEMA IF EXISTS {quoted} CASCADE")
    finally:
        await conn.close()


async def _table_exists(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"))


async def _applied_versions(conn: asyncpg.Connection) -> set[int]:
    # A lock-free first look, so a run with nothing to do takes no lock at all.
    if not await _table_exists(conn):
        return set()
    return {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}


async def _apply(conn: asyncpg.Connection, migration: Migration) -> bool:
    sql = migration.path.read_text()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(_CREATE_TABLE)
        done = await conn.fetchval(
            "SELECT true FROM schema_migrations WHERE version = $1", migration.version
        )
        if done:
            return False
        try:
            await conn.execute(sql)
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"{migration.name} failed: {exc}") from exc
        await conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            migration.version,
            migration.name,
        )
    return True


# --- the pool -----------------------------------------------------------------------------


def _encode_json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    # json/jsonb arrive as Python values (not strings), decoded by orjson.
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=_encode_json, decoder=orjson.loads, schema="pg_catalog"
        )


async def connect_pool(
    database_url: str, *, min_size: int = 1, max_size: int = 4, **kwargs: Any
) -> asyncpg.Pool:
    """An asyncpg pool whose connections decode json/jsonb with orjson.

    Four connections by default: the mirror's writers and the API's queries are short, and a
    2-core database gains nothing from more concurrent statements per process.
    """
    pool = await asyncpg.create_pool(
        database_url, min_size=min_size, max_size=max_size, init=_init_connection, **kwargs
    )
    assert pool is not None
    return pool
