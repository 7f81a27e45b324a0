"""`cerebelum worker --app MODULE`: join the worker group and run the workflows MODULE defines."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

from cerebelum.config import Settings
from cerebelum.core.workflow import Registry
from cerebelum.errors import WorkflowDefinitionError

if TYPE_CHECKING:
    from cerebelum.telemetry.tracing import Tracing
    from cerebelum.worker.app import Worker

log = logging.getLogger("cerebelum.worker")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "worker",
        help="run a worker: owns partitions of cerebelum.commands and runs their executions",
        description="Join the cerebelum-workers consumer group and run the workflows defined "
        "(as module-level Workflow objects) in --app. Endpoints come from CEREBELUM_KAFKA.",
    )
    p.add_argument(
        "--app", required=True, help="module defining the workflows, e.g. examples.order"
    )
    p.add_argument("--instance-id", help="static group membership id (group.instance.id)")
    p.add_argument(
        "--session-timeout-ms",
        type=int,
        help="crash detection time (classic group protocol only; with KIP-848 it is the "
        "broker's group.consumer.session.timeout.ms)",
    )
    p.set_defaults(func=run)


def load_registry(module_name: str) -> Registry:
    if "" not in sys.path:
        sys.path.insert(0, "")  # `--app examples.order` works from the project folder
    try:
        module = importlib.import_module(module_name)
        registry = Registry.from_namespace(vars(module))
    except WorkflowDefinitionError as exc:  # a bad workflow or migration: one clear line
        raise SystemExit(f"{module_name}: {exc}") from None
    if not registry.names():
        raise SystemExit(f"{module_name} defines no Workflow")
    return registry


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    overrides = {}
    if args.instance_id:
        overrides["group_instance_id"] = args.instance_id
    if args.session_timeout_ms:
        overrides["session_timeout_ms"] = args.session_timeout_ms
        overrides["heartbeat_interval_ms"] = max(100, args.session_timeout_ms // 3)
    if overrides:
        from dataclasses import replace

        settings = replace(settings, **overrides)
    registry = load_registry(args.app)
    failed = asyncio.run(serve(settings, registry))
    if threading.active_count() > 1:
        # A plain step still running in a pool thread past the grace period cannot be
        # stopped, and Python would wait for it at exit. The partitions are released and the
        # step's outcome is unrecorded (its new owner runs it again), so leave now. The same
        # holds for the thread of a producer abandoned while hung (worker/transactions.py).
        log.warning(
            "exiting with %d thread(s) still running (a plain step past the grace period, "
            "or a producer abandoned while hung)",
            threading.active_count() - 1,
        )
        logging.shutdown()
        os._exit(1 if failed else 0)
    return 1 if failed else 0


async def serve(settings: Settings, registry: Registry) -> bool:
    """Run until SIGTERM/SIGINT (or a fatal error). True if it ended on an error."""
    # The worker allocates many short-lived objects (events, snapshots) beside a large,
    # long-lived table of executions; the default thresholds made the cyclic GC a third of its
    # CPU (bench/README.md). Collect young objects less often, and never rescan what was
    # alive at start-up.
    gc.set_threshold(50_000, 20, 100)
    gc.freeze()
    from cerebelum.telemetry.http import start_ops_server
    from cerebelum.worker.app import Worker

    tracing = _setup_tracing(settings)
    worker = Worker(settings, registry, tracing)
    ops = None
    if settings.worker_http_port is not None:  # before start(): /healthz answers while it waits
        ops = await start_ops_server(
            "worker", settings.http_host, settings.worker_http_port,
            worker.metrics.registry, worker.alive, worker.ready,
        )  # fmt: skip
    try:
        return await _run(worker)
    finally:
        if ops is not None:
            await ops.close()
        if tracing is not None:
            await asyncio.to_thread(tracing.shutdown)


def _setup_tracing(settings: Settings) -> Tracing | None:
    """The worker's OpenTelemetry spans, if configured (settings.traces_exporter). Without the
    `tracing` extra installed, the worker runs untraced and says so once: a missing
    observability aid must not stop the workflows."""
    if settings.traces_exporter is None:
        return None
    try:
        from cerebelum.telemetry.tracing import setup_tracing
    except ImportError as exc:
        log.warning(
            "tracing is configured but OpenTelemetry is not installed (%s); running without "
            "spans. Install it with: pip install 'cerebelum[tracing]'",
            exc,
        )
        return None
    from cerebelum.worker.app import worker_identity

    try:
        tracing = setup_tracing(settings.traces_exporter, worker_identity(settings))
    except Exception as exc:  # e.g. an OTEL_* variable the SDK cannot read
        log.warning("tracing could not be set up (%s); running without spans", exc)
        return None
    log.info("tracing on: spans of executions and steps go to %s", settings.traces_exporter)
    return tracing


async def _run(worker: Worker) -> bool:
    from cerebelum.worker.app import ClusterMisconfigured

    try:
        await worker.start()
    except ClusterMisconfigured as exc:
        log.error("cannot serve this cluster: %s", exc)
        return True
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopping = asyncio.ensure_future(stop.wait())
    fatal = asyncio.ensure_future(worker.fatal.wait())
    await asyncio.wait([stopping, fatal], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    fatal.cancel()
    log.info("stopping: letting running steps settle, then leaving the group")
    await worker.stop()
    return worker.failed is not None
