"""Taking over partitions: what a new owner reads before it decides anything for them.

1. Read cerebelum.state[p] to its last stable offset. The newest ownership record (or
   snapshot) names the partition's last writer: its transactional id.
2. Ask for the committed offsets, briefly. Stable offsets: the answer waits while a
   transaction that commits offsets for these partitions is in flight. A live owner ends its
   transaction before it lets a partition go, so one still open after PROBE_S, or a
   transaction left open on state[p] (its last stable offset below the high watermark), is a
   dead worker's or a zombie's: fence its writer. init_transactions with that transactional id
   aborts the open transaction at once; otherwise the partition would wait for its timeout.
3. Fetch the committed offsets (now final).
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

from confluent_kafka import KafkaError, KafkaException, Producer

from cerebelum.worker.restore import RestoredPartition, StateReader, log_restored

log = logging.getLogger(__name__)

# Fencing is one InitProducerId round; past this the broker is not answering.
FENCE_TIMEOUT_S = 10.0
# A live previous owner ends its transaction before letting the partition go, so its offsets
# are stable at once; still unstable after this, the transaction is a dead worker's.
PROBE_S = 1.0
# The committed offsets once nothing is left open: past this the broker is not answering.
COMMITTED_TIMEOUT_S = 30.0

Committed = Callable[[list[int], float], dict[int, int]]


def take_over(
    reader_config: dict[str, Any],
    fence_config: dict[str, Any],
    me: str,
    partitions: list[int],
    committed: Committed,
    wait_s: float,
    state_topic: str,
) -> tuple[dict[int, RestoredPartition], dict[int, int]]:
    """The partitions' restored executions (read from `state_topic`, the namespace's) and
    committed offsets (-1001: none committed)."""
    started = time.monotonic()
    reader = StateReader(reader_config, partitions, state_topic)
    try:
        stable = reader.read_to_stable_end()
        ends = reader.high_watermarks(FENCE_TIMEOUT_S)
        suspects = {p for p in partitions if stable[p] < ends[p]}
        offsets: dict[int, int] | None = None
        try:
            offsets = committed(partitions, PROBE_S)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._TIMED_OUT:
                raise
            suspects = set(partitions)  # one of them has offsets in an open transaction
        for writer in {reader.writers.get(p) for p in suspects} - {None, me}:
            assert writer is not None
            fence(fence_config, writer)
        if offsets is None:
            offsets = committed(partitions, COMMITTED_TIMEOUT_S)
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
