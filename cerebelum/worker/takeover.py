"""Taking over partitions: what a new owner reads before it decides anything for them.

1. Read cerebelum.state[p] to its last stable offset. The newest record names its writer.
2. If a transaction is still open there (the last stable offset is below the high watermark),
   its writer is dead or a zombie (a live owner ends its transaction before it lets a
   partition go): fence that transactional id. init_transactions with it aborts the open
   transaction at once; otherwise it would block the partition until its transaction timeout.
3. Fetch the committed offsets. Stable offsets: the fetch waits while a transaction that
   commits offsets for these partitions is in flight, so they are final.
4. Read on until the last stable offset passes the high watermark seen after 3. A transaction
   that committed those offsets may have its snapshots' commit markers land just after its
   offsets' marker; this waits for them, so snapshots and offsets match (and a transaction
   left open by a worker we could not name is waited out, up to its timeout).

All of it blocks (librdkafka); the worker runs it in a thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException, Producer

from cerebelum.worker.restore import RestoredPartition, StateReader, log_restored

log = logging.getLogger(__name__)

# Fencing is one InitProducerId round; past this the broker is not answering.
FENCE_TIMEOUT_S = 10.0

Committed = Callable[[list[int]], dict[int, int]]


def take_over(
    reader_config: dict[str, Any],
    fence_config: dict[str, Any],
    me: str,
    partitions: list[int],
    committed: Committed,
    wait_s: float,
) -> tuple[dict[int, RestoredPartition], dict[int, int]]:
    """The partitions' restored executions and committed offsets (-1001: none committed)."""
    started = time.monotonic()
    reader = StateReader(reader_config, partitions)
    try:
        stable = reader.read_to_stable_end()
        ends = reader.high_watermarks(FENCE_TIMEOUT_S)
        left_open = {reader.writers.get(p) for p in partitions if stable[p] < ends[p]}
        for writer in left_open - {None, me}:
            assert writer is not None
            fence(fence_config, writer)
        offsets = committed(partitions)
        if not reader.read_past(reader.high_watermarks(FENCE_TIMEOUT_S), wait_s):
            log.warning(
                "a transaction is still open on cerebelum.state after %.0f s; going on with "
                "what is committed (it cannot commit: its offsets would be refused)",
                wait_s,
            )
        restored = reader.result()
    finally:
        reader.close()
    log_restored(restored, reader.records, time.monotonic() - started)
    return restored, offsets


def fence(config: dict[str, Any], transactional_id: str) -> None:
    """Bump the epoch of `transactional_id`: its open transaction is aborted, and its
    producer can write nothing more."""
    started = time.monotonic()
    producer = Producer({**config, "transactional.id": transactional_id})
    try:
        producer.init_transactions(FENCE_TIMEOUT_S)
    except KafkaException as exc:
        log.warning("could not fence %s: %s", transactional_id, exc.args[0].str())
        return
    finally:
        producer.flush(0)
    log.info(
        "fenced %s, which had left a transaction open (%.0f ms)",
        transactional_id,
        (time.monotonic() - started) * 1000,
    )
