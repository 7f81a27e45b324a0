"""Settings, built once at the edge (CLI, app factory) from the environment.

Nothing deeper in the code reads os.environ: processes receive a `Settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_KAFKA = "127.0.0.1:19092"
DEFAULT_DATABASE_URL = "postgresql://cerebelum@127.0.0.1:15432/cerebelum"


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap: str = DEFAULT_KAFKA
    database_url: str = DEFAULT_DATABASE_URL
    # Crash detection time: a dead worker's partitions move after this long. 6 s keeps a
    # failover (detection + restore) under 10 s (bench/failover) and still rides out a few
    # seconds of a stalled event loop; 3 s gives ~4 s failovers at more risk of false alarms.
    session_timeout_ms: int = 6_000
    # A third of the session timeout, as Kafka recommends, so two lost heartbeats are survivable.
    heartbeat_interval_ms: int = 2_000
    # Set for static membership: a restarted worker with the same id gets its partitions back
    # without a rebalance (but a crashed one is only detected after session_timeout_ms).
    group_instance_id: str | None = None
    # How long SIGTERM waits for running steps before leaving the group anyway.
    shutdown_grace_s: float = 10.0
    # Steps running at once per worker; beyond it new step effects queue.
    max_concurrent_steps: int = 1_000
    # Partition transactions in flight at once per worker. Fewer means larger transactions
    # under load (each costs the broker a coordinator round and markers whatever its size);
    # an idle partition still commits at once. Measured in bench/README.md.
    max_concurrent_transactions: int = 8

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
            heartbeat_interval_ms=int(
                env.get("CEREBELUM_HEARTBEAT_INTERVAL_MS", defaults.heartbeat_interval_ms)
            ),
            group_instance_id=env.get("CEREBELUM_GROUP_INSTANCE_ID") or None,
            shutdown_grace_s=float(
                env.get("CEREBELUM_SHUTDOWN_GRACE_S", defaults.shutdown_grace_s)
            ),
            max_concurrent_steps=int(
                env.get("CEREBELUM_MAX_CONCURRENT_STEPS", defaults.max_concurrent_steps)
            ),
            max_concurrent_transactions=int(
                env.get(
                    "CEREBELUM_MAX_CONCURRENT_TRANSACTIONS", defaults.max_concurrent_transactions
                )
            ),
        )
