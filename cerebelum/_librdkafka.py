"""What every librdkafka consumer of Cerebelum shares (the worker's, the client's listener)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer

# Records handed over at once at most: a burst arrives in a few hand-overs.
BATCH = 10_000


def take(consumer: Consumer, timeout: float) -> list[Any]:
    """What the consumer has, as soon as it has anything (waiting up to `timeout` for the
    first). consume(n, timeout) alone waits until it has n records or the timeout ends, which
    made every hand-over of a few records cost the whole timeout."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(BATCH, 0)]
