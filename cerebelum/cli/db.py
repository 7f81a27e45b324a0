"""`cerebelum db migrate`: apply the pending sql/ migrations."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from cerebelum.config import Settings
from cerebelum.db import MigrationError, applied_migrations, migrate


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("db", help="the PostgreSQL schema")
    commands = parser.add_subparsers(dest="db_command", required=True)
    migrate_parser = commands.add_parser("migrate", help="apply pending sql/ migrations")
    migrate_parser.set_defaults(func=run_migrate)
    status_parser = commands.add_parser("status", help="list applied migrations")
    status_parser.set_defaults(func=run_status)


def run_migrate(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    try:
        applied = asyncio.run(migrate(settings.database_url))
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name in applied:
        print(f"applied  {name}")
    if not applied:
        print("nothing to apply: the schema is up to date")
    return 0


def run_status(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    for version, name in asyncio.run(applied_migrations(settings.database_url)):
        print(f"{version:>4}  {name}")
    return 0
