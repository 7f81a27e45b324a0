"""Transaction cost: aiokafka producers per partition (today) vs one confluent-kafka producer.

    CEREBELUM_KAFKA=127.0.0.1:59092 .venv/bin/python -m bench.spikes.transactions \
        [--runs 3] [--txns 2000]

Points (each run `--runs` times, interleaved, after one global broker warm-up):
  aio-serial      aiokafka 0.14, one transactional producer for one partition: begin, a batch to
                  cerebelum.events[p] and one to cerebelum.state[p], send_offsets_to_transaction(
                  {commands[p]: off}, group_id), commit; back to back.
  aio-8x          the same with 8 producers (8 partitions) committing concurrently on one loop.
  ck-k{1,4,16,64} confluent-kafka 2.16 (librdkafka), one producer, one transaction covering k
                  partitions: an events[p] and a state[p] record for each, send_offsets for each
                  commands[p] with consumer_group_metadata() of a KIP-848 (group.protocol=consumer)
                  member that owns all 64 partitions; back to back.
  tune-*          ck k=1 and k=16 under other retry.backoff.ms / retry.backoff.max.ms settings, and
                  with send_offsets_to_transaction before the produce() calls (offsets-first).

Per point: latency per transaction (p50/p99/max), transactions/s, CPU per transaction of the broker
(from /proc) and of this client process (process_time: all its threads, librdkafka's included).
Writes bench/results/transactions-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTP
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.common.base import say
from bench.common.procfs import cpu_seconds, pid_listening_on, system_busy_seconds
from bench.common.results import percentiles, spread, write_result

BOOTSTRAP = os.environ.get("CEREBELUM_KAFKA", "127.0.0.1:59092")
EVENTS, STATE, COMMANDS = "cerebelum.events", "cerebelum.state", "cerebelum.commands"
PARTITIONS = 64
EVENT = b'{"type":"step_completed","execution_id":"%s","version":7,"result":' + b"x" * 200 + b"}"
SNAPSHOT = b"s" * 300

# librdkafka settings of every ck point unless a tune point overrides them (see the Q5 notes in
# the report: AddOffsetsToTxn's CONCURRENT_TRANSACTIONS retries wait retry.backoff.ms * 2^n,
# jittered +-20 %, capped at retry.backoff.max.ms).
CK_BASE: dict[str, Any] = {"linger.ms": 0, "retry.backoff.ms": 1, "retry.backoff.max.ms": 20}
TUNINGS: dict[str, dict[str, Any]] = {
    "default": {"linger.ms": 5, "retry.backoff.ms": 100, "retry.backoff.max.ms": 1000},
    "b1-m5": {"linger.ms": 0, "retry.backoff.ms": 1, "retry.backoff.max.ms": 5},
    "b2-m10": {"linger.ms": 0, "retry.backoff.ms": 2, "retry.backoff.max.ms": 10},
    "b5-m50": {"linger.ms": 0, "retry.backoff.ms": 5, "retry.backoff.max.ms": 50},
}


def broker_pid() -> int:
    port = int(BOOTSTRAP.rsplit(":", 1)[1])
    pid = pid_listening_on(port)
    if pid is None:
        raise SystemExit(f"no broker listening on {BOOTSTRAP}")
    return pid


def broker_settings(pid: int) -> dict[str, str]:
    """The broker's properties file (its last argument), as key: value."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    path = Path(args[-2].decode() if args[-1] == b"" else args[-1].decode())
    out = {"properties_file": str(path)}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def idle_fraction(seconds: float = 3.0) -> float:
    """Share of the machine's cores idle over `seconds` (how loud the box is before we start)."""
    busy0, t0 = system_busy_seconds(), time.monotonic()
    time.sleep(seconds)
    busy = system_busy_seconds() - busy0
    return round(1 - busy / ((time.monotonic() - t0) * (os.cpu_count() or 1)), 3)


class Meter:
    """Latencies plus broker/client CPU over a measured window."""

    def __init__(self, broker: int) -> None:
        self.broker = broker

    def __enter__(self) -> Meter:
        self.latencies: list[float] = []
        self.t0 = time.monotonic()
        self.b0 = cpu_seconds(self.broker)
        self.c0 = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.monotonic() - self.t0
        self.broker_cpu = cpu_seconds(self.broker) - self.b0
        self.client_cpu = time.process_time() - self.c0

    def result(self) -> dict[str, Any]:
        n = len(self.latencies)
        return {
            "txns": n,
            "latency_ms": percentiles([x * 1000 for x in self.latencies], (50, 90, 99, 99.9)),
            "txn_per_s": round(n / self.wall, 1),
            "broker_cpu_ms_per_txn": round(1000 * self.broker_cpu / n, 3),
            "client_cpu_ms_per_txn": round(1000 * self.client_cpu / n, 3),
        }


# ------------------------------------------------------------------------- aiokafka (today)


async def _aio_loop(
    producer: AIOKafkaProducer, p: int, n: int, group: str, lat: list[float] | None
) -> None:
    off = 0
    for _ in range(n):
        t = time.monotonic()
        await producer.begin_transaction()
        for topic, value in ((EVENTS, EVENT % b"e"), (STATE, SNAPSHOT)):
            batch = producer.create_batch()
            batch.append(key=b"exec-%d" % p, value=value, timestamp=None)
            await producer.send_batch(batch, topic, partition=p)
        off += 1
        await producer.send_offsets_to_transaction({AioTP(COMMANDS, p): off}, group)
        await producer.commit_transaction()
        if lat is not None:
            lat.append(time.monotonic() - t)


async def _aio_point(width: int, warm: int, n: int, meter: Meter) -> dict[str, Any]:
    group = f"bench-txn-aio-{uuid.uuid4().hex[:6]}"
    producers = []
    for p in range(width):
        prod = AIOKafkaProducer(
            bootstrap_servers=BOOTSTRAP,
            transactional_id=f"bench-txn-aio-{group}-{p}",
            enable_idempotence=True,
            acks="all",
            linger_ms=0,
            retry_backoff_ms=20,  # as the worker does
        )
        await prod.start()
        producers.append(prod)
    try:
        await asyncio.gather(
            *(_aio_loop(pr, p, warm, group, None) for p, pr in enumerate(producers))
        )
        per = max(1, n // width)
        with meter:
            await asyncio.gather(
                *(_aio_loop(pr, p, per, group, meter.latencies) for p, pr in enumerate(producers))
            )
    finally:
        await asyncio.gather(*(pr.stop() for pr in producers))
    return meter.result()


def aio_point(width: int, warm: int, n: int, broker: int) -> dict[str, Any]:
    return asyncio.run(_aio_point(width, warm, n, Meter(broker)))


# ------------------------------------------------------------------ confluent-kafka (proposed)


class CkWorker:
    """One KIP-848 member owning all 64 command partitions, for real group metadata."""

    def __init__(self) -> None:
        self.group = f"bench-txn-ck-{uuid.uuid4().hex[:6]}"
        self.consumer = Consumer(
            {
                "bootstrap.servers": BOOTSTRAP,
                "group.id": self.group,
                "group.protocol": "consumer",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        owned: set[int] = set()
        self.consumer.subscribe(
            [COMMANDS], on_assign=lambda c, ps: owned.update(p.partition for p in ps)
        )
        deadline = time.monotonic() + 60
        while len(owned) < PARTITIONS:
            self.consumer.poll(0.1)
            if time.monotonic() > deadline:
                raise SystemExit(f"the bench member got only {len(owned)} partitions")
        self.offset = 0

    def producer(self, overrides: dict[str, Any]) -> Producer:
        conf = {
            "bootstrap.servers": BOOTSTRAP,
            "transactional.id": f"bench-txn-ck-{uuid.uuid4().hex[:8]}",
            "enable.idempotence": True,
            "acks": "all",
            **overrides,
        }
        prod = Producer(conf)
        prod.init_transactions(30)
        return prod

    def txns(
        self,
        prod: Producer,
        k: int,
        n: int,
        lat: list[float] | None,
        offsets_first: bool = False,
    ) -> None:
        """Back-to-back transactions. offsets_first: send_offsets before producing, so the wait
        for the previous commit's markers (CONCURRENT_TRANSACTIONS) falls on AddOffsetsToTxn,
        retried after retry.backoff.ms, instead of AddPartitionsToTxn (a fixed 20 ms)."""
        produce = prod.produce
        parts = range(k)
        for i in range(n):
            t = time.monotonic()
            prod.begin_transaction()
            self.offset += 1
            if offsets_first:
                prod.send_offsets_to_transaction(
                    [TopicPartition(COMMANDS, p, self.offset) for p in parts],
                    self.consumer.consumer_group_metadata(),
                    30,
                )
            for p in parts:
                produce(EVENTS, EVENT % b"e", b"exec-%d" % p, partition=p)
                produce(STATE, SNAPSHOT, b"exec-%d" % p, partition=p)
            if not offsets_first:
                prod.send_offsets_to_transaction(
                    [TopicPartition(COMMANDS, p, self.offset) for p in parts],
                    self.consumer.consumer_group_metadata(),
                    30,
                )
            prod.commit_transaction(30)
            if lat is not None:
                lat.append(time.monotonic() - t)
            if i % 200 == 0:
                self.consumer.poll(0)  # serve rebalance callbacks, if any

    def point(
        self,
        k: int,
        overrides: dict[str, Any],
        warm: int,
        n: int,
        meter: Meter,
        offsets_first: bool = False,
    ) -> dict[str, Any]:
        prod = self.producer(overrides)
        self.txns(prod, k, warm, None, offsets_first)
        with meter:
            self.txns(prod, k, n, meter.latencies, offsets_first)
        prod.flush(10)
        return meter.result()


# ------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--txns", type=int, default=2000, help="measured transactions per point")
    ap.add_argument("--warmup", type=int, default=1000, help="global broker warm-up transactions")
    ap.add_argument("--point-warmup", type=int, default=100)
    ap.add_argument(
        "--tune-txns", type=int, default=500, help="measured transactions per tune-* point"
    )
    ap.add_argument("--only", default="", help="regex: run only the points whose name matches")
    args = ap.parse_args()

    broker = broker_pid()
    say(f"broker pid {broker}; measuring idle CPU of the machine for 3 s")
    idle_before = idle_fraction()
    say(f"machine idle before: {100 * idle_before:.1f}% of {os.cpu_count()} cores")

    ck = CkWorker()
    points: dict[str, Any] = {
        "aio-serial": lambda m: aio_point(1, args.point_warmup, args.txns, broker),
        "aio-8x": lambda m: aio_point(8, args.point_warmup // 8 + 10, args.txns, broker),
    }
    for k in (1, 4, 16, 64):
        points[f"ck-k{k}"] = lambda m, k=k: ck.point(k, CK_BASE, args.point_warmup, args.txns, m)
    for name, conf in TUNINGS.items():
        for k in (1, 16):
            points[f"tune-{name}-k{k}"] = lambda m, k=k, conf=conf: ck.point(
                k, conf, args.point_warmup, args.tune_txns, m
            )
    for k in (1, 16):
        points[f"tune-offsets-first-k{k}"] = lambda m, k=k: ck.point(
            k, CK_BASE, args.point_warmup, args.tune_txns, m, offsets_first=True
        )
    if args.only:
        points = {n: f for n, f in points.items() if re.search(args.only, n)}

    say(f"broker warm-up: {args.warmup} transactions (k=1 and k=16, ck, and aiokafka)")
    warm = ck.producer(CK_BASE)
    ck.txns(warm, 1, args.warmup // 2, None)
    ck.txns(warm, 16, args.warmup // 4, None)
    aio_point(1, args.warmup // 4, 10, broker)

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in points}
    for r in range(args.runs):
        for name, fn in points.items():
            t = time.monotonic()
            res = fn(Meter(broker))
            runs[name].append(res)
            lat = res["latency_ms"]
            say(
                f"run {r + 1}/{args.runs} {name:>18}: p50 {lat['p50']:6.2f} ms  p99 {lat['p99']:7.2f} ms"  # noqa: E501
                f"  {res['txn_per_s']:7.1f} txn/s  broker {res['broker_cpu_ms_per_txn']:.3f}"
                f" client {res['client_cpu_ms_per_txn']:.3f} CPU-ms/txn  ({time.monotonic() - t:.0f} s)"  # noqa: E501
            )

    summary = {}
    for name, rs in runs.items():
        summary[name] = {
            "p50_ms": spread([x["latency_ms"]["p50"] for x in rs]),
            "p99_ms": spread([x["latency_ms"]["p99"] for x in rs]),
            "txn_per_s": spread([x["txn_per_s"] for x in rs]),
            "broker_cpu_ms_per_txn": spread([x["broker_cpu_ms_per_txn"] for x in rs]),
            "client_cpu_ms_per_txn": spread([x["client_cpu_ms_per_txn"] for x in rs]),
        }
        k = int(name.rsplit("k", 1)[1]) if re.search(r"-k\d+$", name) else 1
        s = summary[name]
        s["partitions_per_txn"] = k
        s["cpu_ms_per_partition_transition"] = round(
            (s["broker_cpu_ms_per_txn"]["median"] + s["client_cpu_ms_per_txn"]["median"]) / k, 3
        )
    say("summary (median of runs; [min..max]):")
    for name, s in summary.items():
        say(
            f"  {name:>18}: p50 {s['p50_ms']['median']:6.2f} [{s['p50_ms']['min']}..{s['p50_ms']['max']}]"  # noqa: E501
            f"  p99 {s['p99_ms']['median']:7.2f} [{s['p99_ms']['min']}..{s['p99_ms']['max']}]"
            f"  txn/s {s['txn_per_s']['median']:7.1f}"
            f"  CPU-ms/txn broker {s['broker_cpu_ms_per_txn']['median']:.3f}"
            f" client {s['client_cpu_ms_per_txn']['median']:.3f}"
            f"  per partition-transition {s['cpu_ms_per_partition_transition']:.3f}"
        )
    write_result(
        "transactions",
        {
            "command": "python -m bench.spikes.transactions "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v != ""),
            "idle_fraction_before": idle_before,
            "idle_fraction_after": idle_fraction(),
            "broker_settings": broker_settings(broker),
            "clients": {
                "aiokafka": "0.14.0 (linger_ms=0, retry_backoff_ms=20, acks=all, idempotent)",
                "confluent_kafka": __import__("confluent_kafka").version()[0],
                "librdkafka": __import__("confluent_kafka").libversion()[0],
                "ck_base_config": CK_BASE,
                "tunings": TUNINGS,
                "ck_group_protocol": "consumer (KIP-848)",
            },
            "record_sizes": {"event": len(EVENT), "snapshot": len(SNAPSHOT)},
            "summary": summary,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
