"""librdkafka configurations of the worker's clients, derived from Settings in one place."""

from __future__ import annotations

import logging
from typing import Any

from cerebelum.config import Settings
from cerebelum.security.kafka import librdkafka_config
from cerebelum.telemetry.logs import JSON


def common(settings: Settings, client_id: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        # Address, TLS and SASL: the same for every client (cerebelum.security.kafka).
        **librdkafka_config(settings),
        "client.id": client_id,
        # librdkafka logs connection errors itself at ERROR level every few seconds while a
        # broker is away; the worker logs what matters (retries, failovers) on its own.
        "log_level": 3,
        # After a broker restart, reconnect within a second of its return: librdkafka's
        # default backoff grows to 10 s while it is away, which the fault test measured as up
        # to ~4 s of extra stall after the broker was back. One attempt a second per broker
        # while it is down costs nothing.
        "reconnect.backoff.max.ms": 1000,
    }
    if settings.log_format == JSON:
        # librdkafka writes its lines straight to stderr, which would break one JSON object
        # per line: hand them to Python's logging instead (delivered when the client is
        # polled, which the consumer and producer are all the time).
        config["logger"] = logging.getLogger("cerebelum.librdkafka")
    return config


def consumer_config(settings: Settings, worker_id: str) -> dict[str, Any]:
    config = {
        # The cluster view and the API's workflow directory name workers by this client id.
        **common(settings, settings.names.worker_client_id(worker_id)),
        "group.id": settings.names.worker_group,
        "enable.auto.commit": False,  # offsets are committed inside each transaction
        "enable.auto.offset.store": False,
        # Only committed commands; and the committed-offset fetch asks for stable offsets, so
        # a new owner waits out a previous owner's transaction that commits offsets (KIP-447).
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        # Long polls: the broker answers a fetch as soon as a record arrives, so a long wait
        # costs no latency, while short waits over 64 partitions burned ~0.3 core idle. Not
        # longer: a partition resumed after a take-over joins the fetches only once the fetch
        # in flight returns, so this bounds how long a quiet taken-over partition waits.
        "fetch.wait.max.ms": 500,
    }
    if settings.group_instance_id:
        config["group.instance.id"] = settings.group_instance_id
    if settings.group_protocol == "consumer":
        # KIP-848: the broker assigns partitions incrementally (survivors keep theirs on a
        # failover); session timeout and heartbeat are the broker's group.consumer.* settings.
        config["group.protocol"] = "consumer"
    else:
        config.update(
            {
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": settings.heartbeat_interval_ms,
            }
        )
    return config


def producer_config(settings: Settings, worker_id: str) -> dict[str, Any]:
    return {
        **common(settings, settings.names.worker_client_id(worker_id)),
        # One transactional id per worker process: a restarted worker with the same id (a
        # static member) fences its previous incarnation; zombies are fenced by the group
        # generation carried with the offsets (KIP-447), not by this id.
        "transactional.id": settings.names.worker_transactional_id(worker_id),
        "acks": "all",
        # How long a transaction of a dead worker blocks the new owners of its partitions:
        # the coordinator aborts it after this (checked every
        # transaction.abort.timed.out.transaction.cleanup.interval.ms on the broker).
        "transaction.timeout.ms": settings.transaction_timeout_ms,
        # Records wait in librdkafka's queue until the transaction commits, which flushes them
        # at once (commit ignores linger): one produce request per broker per transaction.
        "linger.ms": 100,
        # A transaction begun right after the previous commit gets CONCURRENT_TRANSACTIONS
        # until that commit's markers are written (~1-3 ms); retry after 1 ms, at most 20 ms,
        # instead of librdkafka's 100 ms default (which made a back-to-back transaction ~100 ms).
        "retry.backoff.ms": 1,
        "retry.backoff.max.ms": 20,
        # A snapshot may reach 2 MiB (MAX_SNAPSHOT_BYTES); the topics accept 4 MiB.
        "message.max.bytes": 4 * 1024 * 1024,
        # Room for a large transaction's records before produce() must wait (BufferError).
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
    }


def fence_config(settings: Settings, worker_id: str) -> dict[str, Any]:
    """For the short-lived producer that fences a dead owner's transactional id."""
    return common(settings, f"cerebelum-fence:{worker_id}")


def restore_config(settings: Settings, worker_id: str) -> dict[str, Any]:
    return common(settings, f"cerebelum-restore:{worker_id}")
