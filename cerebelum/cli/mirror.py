"""`cerebelum mirror`: run the mirror (cerebelum.events → PostgreSQL) until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from typing import Any

from cerebelum.backoff import until_ready
from cerebelum.config import Settings
from cerebelum.db import migrate
from cerebelum.mirror import Mirror
from cerebelum.mirror.dead_letters import DeadLetterMirror
from cerebelum.mirror.faults import is_retried
from cerebelum.telemetry.http import start_ops_server

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "mirror", help="mirror cerebelum.events into PostgreSQL (events, executions)"
    )
    # Two writers measured ~55-60k events/s on the 2-core dev box, one ~36k.
    parser.add_argument(
        "--writers", type=int, default=2,
        help="database connections writing at once, each a share of the partitions (default 2)",
    )  # fmt: skip
    parser.add_argument(
        "--group",
        help="consumer group id (default: the namespace's, cerebelum-mirror in the default)",
    )
    parser.add_argument(
        "--no-migrate", action="store_true", help="do not apply pending sql/ migrations first"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    # SIGINT and SIGTERM stop the mirror cleanly once it runs; before that, Ctrl-C just exits.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_mirror(settings, args.group, args.writers, not args.no_migrate))
    return 0


async def _mirror(settings: Settings, group: str, writers: int, run_migrations: bool) -> None:
    mirror = Mirror(settings, group_id=group, writers=writers)
    loop = asyncio.get_running_loop()
    # Installed first, so SIGTERM also ends the wait for a database or broker not up yet.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, mirror.request_stop)
    ops = None
    if settings.mirror_http_port is not None:  # /healthz answers while it waits for services
        ops = await start_ops_server(
            "mirror", settings.http_host, settings.mirror_http_port,
            mirror.metrics.registry, mirror.alive, mirror.ready,
        )  # fmt: skip
    try:
        await _serve(settings, mirror, run_migrations)
    finally:
        if ops is not None:
            await ops.close()


async def _serve(settings: Settings, mirror: Mirror, run_migrations: bool) -> None:
    if run_migrations:
        applied = await until_ready(
            "mirror: PostgreSQL (to apply migrations)",
            lambda: migrate(settings.namespace_database_url, schema=settings.names.schema),
            retry_on=is_retried, stopping=mirror.stopping, logger=log,
        )  # fmt: skip
        if applied is None:
            log.info("mirror stopped before PostgreSQL answered")
            return
        for name in applied:
            log.info("applied migration %s", name)
    await mirror.start()
    dead_letters = None
    if mirror.pool is not None:
        dead_letters = asyncio.create_task(
            DeadLetterMirror(settings, mirror.pool, mirror.stopping).run()
        )
    try:
        await mirror.run()
    finally:
        if dead_letters is not None:
            mirror.request_stop()  # run() returned or failed: the dead letters stop too
            await dead_letters
        await mirror.stop()
    s = mirror.stats
    log.info("mirror stopped: %d events (%d new), %d malformed", s.events_seen,
             s.events_written, s.malformed)  # fmt: skip
