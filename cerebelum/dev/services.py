"""Bring the local Kafka broker and PostgreSQL server up and down together.

State lives in `<root>/.dev/` (data, logs, pids, the ports in use); downloads in `<root>/.cache/`.
`up` is idempotent: a service whose process is alive and whose port answers is left alone.
`up`, `down` and `reset` hold an exclusive lock (`.dev/up.lock`) from start to end, so two of
them run one after the other: a second `up` started while the first is still starting the
broker waits, then finds it running (it used to launch a second broker on the same data).
The root is made absolute first: the broker runs from .dev/kafka, where a relative path to the
jars or the config would not resolve.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from cerebelum.dev import exclusive, kafka, kafka_sasl, postgres, say


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the running services answer: what Settings.kafka_bootstrap/database_url want."""

    kafka_bootstrap: str
    database_url: str


@dataclass(frozen=True, slots=True)
class Ports:
    """The ports `up` used, saved in .dev/ports.json so status and down find the same services."""

    kafka_port: int = kafka.DEFAULT_PORT
    kafka_controller_port: int = kafka.DEFAULT_CONTROLLER_PORT
    postgres_port: int = postgres.DEFAULT_PORT


def find_root(start: Path | None = None) -> Path:
    """The nearest folder with a pyproject.toml above `start`, else this package, else cwd."""
    starts = [start] if start is not None else [Path(__file__).resolve(), Path.cwd().resolve()]
    for origin in starts:
        for folder in [origin, *origin.parents]:
            if (folder / "pyproject.toml").exists():
                return folder
    raise FileNotFoundError(f"no pyproject.toml above {starts}; pass the repo root explicitly")


def up(root: Path | None = None, ports: Ports | None = None) -> Endpoints:
    """Start Kafka and PostgreSQL unless they already run; print and return their endpoints."""
    root = _absolute(root)
    with _lock(root):
        ports = ports or saved_ports(root)
        kafka_layout, pg_layout = _layouts(root, ports)
        kafka.start(kafka_layout)
        postgres.start(pg_layout)
        _save_ports(root, ports)
    endpoints = Endpoints(kafka_bootstrap=kafka_layout.bootstrap, database_url=pg_layout.url)
    say(f"CEREBELUM_KAFKA={endpoints.kafka_bootstrap}")
    say(f"CEREBELUM_DATABASE_URL={endpoints.database_url}")
    say(
        f"# SASL_SSL on {kafka_layout.sasl_bootstrap}: `set -a; . "
        f"{kafka_sasl.client_env_file(kafka_layout.home)}; set +a`; "
        "service roles: `cerebelum dev status`"
    )
    return endpoints


def down(root: Path | None = None) -> None:
    """Stop both services (Kafka first, so nothing is left writing to a stopped database)."""
    root = _absolute(root)
    with _lock(root):
        kafka_layout, pg_layout = _layouts(root, saved_ports(root))
        kafka.stop(kafka_layout)
        postgres.stop(pg_layout)


def status(root: Path | None = None) -> dict[str, object]:
    """Whether each service runs, its pid, endpoint and log file (no lock: it only looks)."""
    root = _absolute(root)
    kafka_layout, pg_layout = _layouts(root, saved_ports(root))
    return {"kafka": kafka.status(kafka_layout), "postgres": postgres.status(pg_layout)}


def reset(root: Path | None = None) -> None:
    """Stop both services and delete all their state; the jar cache in .cache/ is kept."""
    root = _absolute(root)
    down(root)
    with _lock(root):
        shutil.rmtree(root / ".dev", ignore_errors=True)
    say(f"deleted {root / '.dev'}")


def _absolute(root: Path | None) -> Path:
    return (root or find_root()).resolve()


def _lock(root: Path) -> contextlib.AbstractContextManager[None]:
    # Waiting has no limit: the holder is a `dev up` fetching jars or starting services, and
    # the kernel releases the lock the moment that process exits, however it exits.
    return exclusive(
        root / ".dev" / "up.lock", f"waiting for another `cerebelum dev` on {root} to finish..."
    )


def _layouts(root: Path, ports: Ports) -> tuple[kafka.KafkaLayout, postgres.PostgresLayout]:
    return (
        kafka.KafkaLayout(root, port=ports.kafka_port, controller_port=ports.kafka_controller_port),
        postgres.PostgresLayout(root, port=ports.postgres_port),
    )


def _ports_file(root: Path) -> Path:
    return root / ".dev" / "ports.json"


def saved_ports(root: Path) -> Ports:
    """The ports the last `up` used, or the defaults."""
    try:
        return Ports(**json.loads(_ports_file(root).read_text()))
    except (OSError, ValueError, TypeError):
        return Ports()


def _save_ports(root: Path, ports: Ports) -> None:
    _ports_file(root).write_text(json.dumps(asdict(ports)) + "\n")
