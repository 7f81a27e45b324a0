"""Settings, built once at the edge (CLI, app factory) from the environment.

Nothing deeper in the code reads os.environ: processes receive a `Settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from cerebelum.telemetry.logs import LOG_FORMATS, TEXT

DEFAULT_KAFKA = "127.0.0.1:19092"
DEFAULT_DATABASE_URL = "postgresql://cerebelum@127.0.0.1:15432/cerebelum"


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap: str = DEFAULT_KAFKA
    database_url: str = DEFAULT_DATABASE_URL
    # The worker group's protocol: "consumer" (KIP-848, Kafka 4.0+: the broker assigns
    # partitions incrementally and owns the session timeout, group.consumer.session.timeout.ms)
    # or "classic" (cooperative-sticky, with the two settings below).
    group_protocol: str = "consumer"
    # Crash detection time of classic-protocol members (the workers with group_protocol
    # "classic", and the mirror): a dead member's partitions move after this long. 6 s rides
    # out a few seconds of a stalled event loop; 3 s gives faster failovers at more risk of
    # false alarms.
    session_timeout_ms: int = 6_000
    # A third of the session timeout, as Kafka recommends, so two lost heartbeats are survivable.
    heartbeat_interval_ms: int = 2_000
    # The broker aborts a transaction open longer than this. A transaction lasts milliseconds,
    # so this only matters when a worker dies with one open: its partitions' new owners fence
    # it at once when they can name it (its id is on the partition's snapshots), and wait up
    # to this long when they cannot (a partition with no snapshot yet). Long enough that a
    # loaded broker's slow commit is not aborted (each abort redoes the transaction).
    transaction_timeout_ms: int = 10_000
    # Set for static membership: a restarted worker with the same id gets its partitions back
    # without a rebalance (but a crashed one is only detected after session_timeout_ms).
    group_instance_id: str | None = None
    # How long SIGTERM waits for running steps before leaving the group anyway.
    shutdown_grace_s: float = 10.0
    # Group commit over time: transactions start at most this often. Each costs the broker
    # ~5 ms of CPU (and every read_committed consumer a fetch) whatever it carries, so under a
    # steady trickle, transitions that arrive while waiting share one. An input after a quiet
    # spell is committed at once; under load the wait adds up to this much per transition.
    # Measured trade-off (CPU per execution against latency): bench/README.md.
    commit_interval_ms: int = 10
    # Steps running at once per worker; beyond it new step effects queue.
    max_concurrent_steps: int = 1_000
    # "text" (for people) or "json" (one object per line, for log collectors).
    log_format: str = TEXT
    # The worker's and the mirror's own HTTP endpoint (/metrics, /healthz, /readyz): None
    # (unset) serves none, so several workers on one machine never collide by default; 0 lets
    # the system pick a free port (logged at start); any other number is that port.
    worker_http_port: int | None = None
    mirror_http_port: int | None = None
    # The address those endpoints listen on: loopback unless a scraper elsewhere needs them.
    http_host: str = "127.0.0.1"
    # Tests only (fault injection): a worker that finds this file between a transaction's
    # offsets and its commit deletes it and stops itself (SIGSTOP), to be a zombie on cue.
    fault_pause_before_commit: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()
        return cls(
            kafka_bootstrap=env.get("CEREBELUM_KAFKA", defaults.kafka_bootstrap),
            database_url=env.get("CEREBELUM_DATABASE_URL", defaults.database_url),
            session_timeout_ms=int(
                env.get("CEREBELUM_SESSION_TIMEOUT_MS", defaults.session_timeout_ms)
            ),
            group_protocol=env.get("CEREBELUM_GROUP_PROTOCOL", defaults.group_protocol),
            transaction_timeout_ms=int(
                env.get("CEREBELUM_TRANSACTION_TIMEOUT_MS", defaults.transaction_timeout_ms)
            ),
            fault_pause_before_commit=env.get("CEREBELUM_FAULT_PAUSE_BEFORE_COMMIT") or None,
            heartbeat_interval_ms=int(
                env.get("CEREBELUM_HEARTBEAT_INTERVAL_MS", defaults.heartbeat_interval_ms)
            ),
            group_instance_id=env.get("CEREBELUM_GROUP_INSTANCE_ID") or None,
            commit_interval_ms=int(
                env.get("CEREBELUM_COMMIT_INTERVAL_MS", defaults.commit_interval_ms)
            ),
            shutdown_grace_s=float(
                env.get("CEREBELUM_SHUTDOWN_GRACE_S", defaults.shutdown_grace_s)
            ),
            max_concurrent_steps=int(
                env.get("CEREBELUM_MAX_CONCURRENT_STEPS", defaults.max_concurrent_steps)
            ),
            log_format=_log_format(env.get("CEREBELUM_LOG_FORMAT") or defaults.log_format),
            worker_http_port=_port(env, "CEREBELUM_WORKER_HTTP_PORT"),
            mirror_http_port=_port(env, "CEREBELUM_MIRROR_HTTP_PORT"),
            http_host=env.get("CEREBELUM_HTTP_HOST") or defaults.http_host,
        )


def _log_format(value: str) -> str:
    value = value.strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"CEREBELUM_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
    return value


def _port(env: Mapping[str, str], name: str) -> int | None:
    """A port from the environment: unset or empty is None (no endpoint), 0 any free port."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    port = int(raw)
    if not 0 <= port <= 65_535:
        raise ValueError(f"{name} must be a port number (0-65535), not {raw}")
    return port
