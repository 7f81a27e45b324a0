"""How many requests librdkafka sends for one transaction over k partitions, and how many of
its ProduceRequests are in flight at once (from its protocol debug log).

    CEREBELUM_KAFKA=127.0.0.1:59092 .venv/bin/python -m bench.spikes.produce_requests [k ...]

Each transaction writes one record to each of k partitions of cerebelum.events and of
cerebelum.state (2k topic-partitions), as a worker's transaction over k partitions does.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections import Counter

from confluent_kafka import Producer

from bench.spikes.transactions import BOOTSTRAP, EVENTS, STATE


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def measure(k: int) -> str:
    lines = _Lines()
    logger = logging.getLogger(f"rdkafka-{k}")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(lines)
    producer = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "transactional.id": f"bench-requests-{uuid.uuid4().hex[:8]}",
            "linger.ms": 100,  # as the worker: commit flushes at once
            "debug": "protocol",
            "logger": logger,
        }
    )
    producer.init_transactions(30)
    for _ in range(2):  # the first transaction also looks up partitions; the second is counted
        lines.lines.clear()
        producer.begin_transaction()
        for p in range(k):
            producer.produce(EVENTS, b"e" * 100, b"k", p)
            producer.produce(STATE, b"s" * 100, b"k", p)
        started = time.monotonic()
        producer.commit_transaction(30)
        took = time.monotonic() - started
    sent = Counter(
        m.group(1) for line in lines.lines if (m := re.search(r"Sent (\w+)Request", line))
    )
    in_flight = most = 0
    for line in lines.lines:
        if "Sent ProduceRequest" in line:
            in_flight += 1
            most = max(most, in_flight)
        elif "Received ProduceResponse" in line:
            in_flight -= 1
    return (
        f"k={k:<3} {2 * k:>3} topic-partitions: commit {1000 * took:7.1f} ms; requests "
        f"{dict(sent)}; at most {most} ProduceRequests in flight"
    )


def main() -> None:
    for k in [int(a) for a in sys.argv[1:]] or [1, 8, 32]:
        print(measure(k), flush=True)


if __name__ == "__main__":
    main()
