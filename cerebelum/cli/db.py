"""`cerebelum db migrate|status|grant`: the schema, and what the service roles may do."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from cerebelum.config import Settings
from cerebelum.db import MigrationError, applied_migrations, migrate
from cerebelum.db.grants import PURPOSES, grant
from cerebelum.errors import ConfigurationError
from cerebelum.security.redact import redact


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("db", help="the PostgreSQL schema")
    commands = parser.add_subparsers(dest="db_command", required=True)
    migrate_parser = commands.add_parser(
        "migrate",
        help="apply pending sql/ migrations to the namespace's schema (created if missing)",
    )
    migrate_parser.set_defaults(func=run_migrate)
    status_parser = commands.add_parser("status", help="list applied migrations")
    status_parser.set_defaults(func=run_status)
    grant_parser = commands.add_parser(
        "grant",
        help="give a role only what the mirror or the API needs (run as the schema's owner)",
        description="Revoke ROLE's table privileges, then grant what --for needs: the mirror "
        "SELECT, INSERT, UPDATE on its tables; the API SELECT only. Run again after a "
        "migration that adds tables.",
    )
    grant_parser.add_argument("--role", required=True, help="an existing role, not a superuser")
    grant_parser.add_argument("--for", dest="purpose", required=True, choices=PURPOSES)
    grant_parser.set_defaults(func=run_grant)


def run_migrate(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    try:
        applied = asyncio.run(
            migrate(settings.namespace_database_url, schema=settings.names.schema)
        )
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # refused, unreachable, or TLS (a certificate not verified)
        return _unreachable(settings, exc)
    for name in applied:
        print(f"applied  {name}")
    if not applied:
        print("nothing to apply: the schema is up to date")
    return 0


def run_status(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    try:
        applied = asyncio.run(applied_migrations(settings.namespace_database_url))
    except OSError as exc:
        return _unreachable(settings, exc)
    for version, name in applied:
        print(f"{version:>4}  {name}")
    return 0


def run_grant(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    try:
        statements = asyncio.run(grant(settings.namespace_database_url, args.role, args.purpose))
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        return _unreachable(settings, exc)
    for statement in statements:
        print(statement)
    return 0


def _unreachable(settings: Settings, exc: OSError) -> int:
    where = redact(settings.database_url)
    print(f"error: cannot connect to PostgreSQL at {where}: {exc}", file=sys.stderr)
    return 1
