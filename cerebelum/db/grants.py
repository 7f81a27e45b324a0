"""Least privilege: what the mirror's and the API's database roles may do.

`cerebelum db migrate` runs as the schema's owner; the mirror and the API then run as roles that
own nothing and get only this (`cerebelum db grant --role NAME --for mirror|api`):

    mirror  SELECT, INSERT, UPDATE on the tables it writes (events and its partitions,
            executions, mirror_rejects) and SELECT on schema_migrations (it checks the schema
            is up to date at start); no DELETE, no DDL
    api     SELECT on every table, and UPDATE of two columns of dead_letters (replayed_at,
            replayed_by: a replay's claim, POST /dlq/{id}/replay); it writes nothing else
LISTEN and NOTIFY (the mirror telling the API a batch is in) need no privilege in PostgreSQL.

In order, in one transaction: 1. revoke the role's table privileges in the schema, so a second
grant with another purpose leaves exactly the new set; 2. CONNECT on the database and USAGE on
the schema; 3. the table privileges above, partitions included; 4. the same as default
privileges for tables the owner creates later (a later migration's); 5. USAGE, SELECT on the
schema's sequences for the mirror (there are none today).
"""

from __future__ import annotations

import asyncpg

from cerebelum.errors import ConfigurationError

PURPOSES = ("mirror", "api")
# The one table the mirror reads but never writes.
MIGRATIONS_TABLE = "schema_migrations"
# The one table the API writes to (two columns of it): a dead letter's replay claim.
DEAD_LETTERS = "dead_letters"


async def grant(database_url: str, role: str, purpose: str) -> list[str]:
    """Give `role` exactly what `purpose` needs; return the statements run."""
    if purpose not in PURPOSES:
        raise ConfigurationError(f"--for must be one of {', '.join(PURPOSES)}, not {purpose!r}")
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    try:
        found = await conn.fetchrow(
            "SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = $1", role
        )
        if found is None:
            raise ConfigurationError(f"no role {role!r}: create it first (CREATE ROLE ... LOGIN)")
        if found["rolsuper"]:
            raise ConfigurationError(
                f"role {role!r} is a superuser: grants would not limit it; use a role that is not"
            )
        statements = await _statements(conn, role, purpose)
        async with conn.transaction():
            for statement in statements:
                await conn.execute(statement)
        return statements
    finally:
        await conn.close()


async def _statements(conn: asyncpg.Connection, role: str, purpose: str) -> list[str]:
    quote = await conn.fetchval("SELECT quote_ident($1)", role)
    schema = await conn.fetchval("SELECT quote_ident(current_schema())")
    database = await conn.fetchval("SELECT quote_ident(current_database())")
    tables = [
        r["relname"]
        for r in await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') ORDER BY 1"
        )
    ]
    if MIGRATIONS_TABLE not in tables:
        raise ConfigurationError("the schema is not there yet: run `cerebelum db migrate` first")
    written = [t for t in tables if t != MIGRATIONS_TABLE]
    quoted = await conn.fetchval(
        "SELECT array_agg(quote_ident(t)) FROM unnest($1::text[]) t", written
    )
    names = ", ".join(f"{schema}.{name}" for name in quoted)
    statements = [
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {quote}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE ALL ON TABLES FROM {quote}",
        f"GRANT CONNECT ON DATABASE {database} TO {quote}",
        f"GRANT USAGE ON SCHEMA {schema} TO {quote}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {quote}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {quote}",
    ]
    if purpose == "api" and DEAD_LETTERS in tables:
        statements.append(
            f"GRANT UPDATE (replayed_at, replayed_by) ON {schema}.{DEAD_LETTERS} TO {quote}"
        )
    if purpose == "mirror":
        statements += [
            f"GRANT INSERT, UPDATE ON {names} TO {quote}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT INSERT, UPDATE ON TABLES "
            f"TO {quote}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {quote}",
        ]
    return statements
