"""A transaction over k partitions: librdkafka (the worker's client) against kafka-python.

    CEREBELUM_KAFKA=127.0.0.1:59092 .venv/bin/python -m bench.spikes.producers \
        [--runs 3] [--txns 300] [--widths 1 4 16 64]

Why: librdkafka 2.16 sends one ProduceRequest per partition (confluentinc/librdkafka#1700, open),
and the broker serves one request of a connection at a time, so a transaction's cost grows by
one broker round trip per partition it writes. kafka-python 3.0.12 (pure Python) sends one
ProduceRequest per broker carrying every partition, like the Java client, and its
send_offsets_to_transaction takes group metadata (KIP-447). Neither has KIP-890.

Each point: back-to-back transactions, each writing one event and one snapshot to each of k
partitions of cerebelum.events and cerebelum.state, offsets first (as the worker does) for the k
command partitions with the group metadata of a member owning all 64 (a KIP-848 member for
librdkafka, a classic member for kafka-python, which has no KIP-848). Points interleave per run.
Measured: latency per transaction, broker CPU and this process's CPU (all its threads) per
transaction. Needs `pip install kafka-python==3.0.12` (not a dependency of the project).
Writes bench/results/producers-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

from confluent_kafka import Producer, TopicPartition

from bench.common.base import say
from bench.common.results import spread, write_result
from bench.spikes.transactions import (
    BOOTSTRAP,
    COMMANDS,
    EVENT,
    EVENTS,
    PARTITIONS,
    SNAPSHOT,
    STATE,
    CkWorker,
    Meter,
    broker_pid,
    idle_fraction,
)

# Both bench members are polled every this many transactions, so that a long run keeps them in
# the group (a member that never polls is removed after max.poll.interval.ms, 5 minutes).
POLL_EVERY = 200


class Librdkafka:
    name = "librdkafka"

    def __init__(self) -> None:
        # A KIP-848 member owning all 64 command partitions, as in bench.spikes.transactions.
        self.consumer = CkWorker().consumer
        self.producer = Producer(
            {
                "bootstrap.servers": BOOTSTRAP,
                "transactional.id": f"bench-producers-ck-{uuid.uuid4().hex[:8]}",
                "acks": "all",
                "linger.ms": 100,  # as the worker: commit flushes at once
                "retry.backoff.ms": 1,
                "retry.backoff.max.ms": 20,
            }
        )
        self.producer.init_transactions(30)
        self.offset = 0

    def txn(self, k: int) -> None:
        p = self.producer
        p.begin_transaction()
        self.offset += 1
        p.send_offsets_to_transaction(
            [TopicPartition(COMMANDS, i, self.offset) for i in range(k)],
            self.consumer.consumer_group_metadata(),
            30,
        )
        for i in range(k):
            p.produce(EVENTS, EVENT % b"e", b"exec-%d" % i, partition=i)
            p.produce(STATE, SNAPSHOT, b"exec-%d" % i, partition=i)
        p.commit_transaction(30)
        if self.offset % POLL_EVERY == 0:
            self.consumer.poll(0)  # a member that never polls leaves after max.poll.interval.ms

    def close(self) -> None:
        self.producer.flush(10)
        self.consumer.close()


class KafkaPython:
    name = "kafka-python"

    def __init__(self) -> None:
        from kafka import KafkaConsumer, KafkaProducer  # type: ignore[import-not-found]

        self.consumer = KafkaConsumer(
            bootstrap_servers=BOOTSTRAP,
            group_id=f"bench-producers-kp-{uuid.uuid4().hex[:6]}",
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
        self.consumer.subscribe([COMMANDS])
        _wait(
            lambda: self.consumer.poll(100),
            lambda: len(self.consumer.assignment()) == PARTITIONS,
        )
        self.producer = KafkaProducer(
            bootstrap_servers=BOOTSTRAP,
            transactional_id=f"bench-producers-kp-{uuid.uuid4().hex[:8]}",
            acks="all",
            linger_ms=100,
            retry_backoff_ms=1,
        )
        self.producer.init_transactions()
        self.offset = 0

    def txn(self, k: int) -> None:
        from kafka import OffsetAndMetadata
        from kafka import TopicPartition as KpTP

        p = self.producer
        p.begin_transaction()
        self.offset += 1
        p.send_offsets_to_transaction(
            {KpTP(COMMANDS, i): OffsetAndMetadata(self.offset, "", -1) for i in range(k)},
            self.consumer.group_metadata(),
        )
        for i in range(k):
            p.send(EVENTS, EVENT % b"e", b"exec-%d" % i, partition=i)
            p.send(STATE, SNAPSHOT, b"exec-%d" % i, partition=i)
        p.commit_transaction()
        if self.offset % POLL_EVERY == 0:
            self.consumer.poll(0)  # as above: max_poll_interval_ms

    def close(self) -> None:
        self.producer.close(5)
        self.consumer.close()


def _wait(step: Any, done: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        step()
        if time.monotonic() > deadline:
            raise SystemExit("the bench member was not assigned all 64 partitions")


def point(client: Any, k: int, warm: int, n: int, broker: int) -> dict[str, Any]:
    for _ in range(warm):
        client.txn(k)
    meter = Meter(broker)
    with meter:
        for _ in range(n):
            t = time.monotonic()
            client.txn(k)
            meter.latencies.append(time.monotonic() - t)
    return meter.result()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--txns", type=int, default=300, help="measured transactions per point")
    ap.add_argument("--warmup", type=int, default=30, help="transactions before each point")
    ap.add_argument("--widths", type=int, nargs="+", default=[1, 4, 16, 64])
    args = ap.parse_args()

    broker = broker_pid()
    say(f"broker pid {broker}; machine idle before: {100 * idle_fraction():.1f}% of 2 cores")
    clients = [Librdkafka(), KafkaPython()]
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        for run in range(1, args.runs + 1):
            for k in args.widths:
                for client in clients if run % 2 else clients[::-1]:
                    # Fewer transactions where each is long, so every point takes similar time.
                    n = max(30, args.txns * 4 // (k + 3))
                    r = point(client, k, args.warmup, n, broker)
                    runs.setdefault(f"{client.name}-k{k}", []).append(r)
                    lat = r["latency_ms"]
                    say(
                        f"run {run}/{args.runs} {client.name:>12} k={k:<3} "
                        f"p50 {lat['p50']:8.2f} ms  p99 {lat['p99']:8.2f} ms"
                        f"  broker {r['broker_cpu_ms_per_txn']:7.3f}  client "
                        f"{r['client_cpu_ms_per_txn']:7.3f} CPU-ms/txn"
                    )
    finally:
        for client in clients:
            client.close()
    summary = {
        name: {
            "p50_ms": spread([r["latency_ms"]["p50"] for r in rs]),
            "p99_ms": spread([r["latency_ms"]["p99"] for r in rs]),
            "broker_cpu_ms_per_txn": spread([r["broker_cpu_ms_per_txn"] for r in rs]),
            "client_cpu_ms_per_txn": spread([r["client_cpu_ms_per_txn"] for r in rs]),
        }
        for name, rs in runs.items()
    }
    for name, s in summary.items():
        say(
            f"{name:>18}: p50 {s['p50_ms']['median']:8.2f}  p99 {s['p99_ms']['median']:8.2f} ms"
            f"  broker {s['broker_cpu_ms_per_txn']['median']:7.3f}"
            f"  client {s['client_cpu_ms_per_txn']['median']:7.3f} CPU-ms/txn"
        )
    path = write_result(
        "producers",
        {"params": vars(args), "bootstrap": BOOTSTRAP, "runs": runs, "summary": summary},
    )
    say(f"wrote {path}")


if __name__ == "__main__":
    main()
