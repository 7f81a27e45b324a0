"""Cost of driving confluent-kafka from asyncio.

    CEREBELUM_KAFKA=127.0.0.1:59092 .venv/bin/python -m bench.spikes.asyncio_bridge

1. A blocking call (a no-op, then a real k=1 transaction) awaited from the loop through
   loop.run_in_executor vs through one dedicated thread fed by a queue.SimpleQueue, the result
   handed back with call_soon_threadsafe. Latency and CPU (whole process) per call.
2. Ping-pong: produce one record, a consumer thread (poll(), then consume(99, timeout=0) to drain)
   hands the batch to the loop with call_soon_threadsafe; time from produce() to the loop's handler
   vs to the consumer thread.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.common.results import percentiles
from bench.spikes.fencing import BOOTSTRAP, IN, PARTITIONS, ensure_topics
from bench.spikes.transactions import CK_BASE, EVENTS, STATE

ISOLATION = "read_committed"


class Dedicated:
    """One thread runs submitted callables in order; results come back to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            fut, fn = self.q.get()
            try:
                r = fn()
                self.loop.call_soon_threadsafe(_settle, fut, r, None)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                self.loop.call_soon_threadsafe(_settle, fut, None, exc)

    def call(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        fut = self.loop.create_future()
        self.q.put((fut, fn))
        return fut


def _settle(fut: asyncio.Future[Any], r: Any, exc: BaseException | None) -> None:
    if not fut.done():
        if exc is None:
            fut.set_result(r)
        else:
            fut.set_exception(exc)


def measure(n: int, step: Callable[[], Any]) -> dict[str, float]:
    lat = []
    c0 = time.process_time()
    for _ in range(n):
        t = time.perf_counter()
        step()
        lat.append((time.perf_counter() - t) * 1e6)
    cpu = (time.process_time() - c0) / n * 1e6
    p = percentiles(lat, (50, 99))
    return {"p50_us": p["p50"], "p99_us": p["p99"], "cpu_us_per_call": round(cpu, 1)}


def bridge_calls() -> dict[str, Any]:
    out: dict[str, Any] = {}
    loop = asyncio.new_event_loop()
    pool = ThreadPoolExecutor(max_workers=1)
    ded = Dedicated(loop)

    def noop() -> None:
        return None

    out["noop-direct"] = measure(20000, noop)
    out["noop-run_in_executor"] = measure(
        5000, lambda: loop.run_until_complete(loop.run_in_executor(pool, noop))
    )
    out["noop-dedicated-thread"] = measure(5000, lambda: loop.run_until_complete(ded.call(noop)))

    prod = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "transactional.id": f"bridge-{uuid.uuid4().hex[:6]}",
            **CK_BASE,
        }
    )
    prod.init_transactions(30)
    group = f"bridge-{uuid.uuid4().hex[:6]}"
    cons = Consumer(
        {"bootstrap.servers": BOOTSTRAP, "group.id": group, "group.protocol": "consumer"}
    )
    owned: set[int] = set()
    cons.subscribe([IN], on_assign=lambda c, ps: owned.update(p.partition for p in ps))
    while len(owned) < PARTITIONS:
        cons.poll(0.1)
    cgm = cons.consumer_group_metadata()
    off = [0]

    def txn() -> None:
        prod.begin_transaction()
        prod.produce(EVENTS, b"e" * 250, b"k", partition=0)
        prod.produce(STATE, b"s" * 300, b"k", partition=0)
        off[0] += 1
        prod.send_offsets_to_transaction([TopicPartition(IN, 0, off[0])], cgm, 30)
        prod.commit_transaction(30)

    for _ in range(300):
        txn()
    for rep in range(3):
        out[f"txn-direct-{rep}"] = measure(500, txn)
        out[f"txn-run_in_executor-{rep}"] = measure(
            500, lambda: loop.run_until_complete(loop.run_in_executor(pool, txn))
        )
        out[f"txn-dedicated-thread-{rep}"] = measure(
            500, lambda: loop.run_until_complete(ded.call(txn))
        )
    cons.close()
    return out


def ping_pong(n: int = 200) -> dict[str, Any]:
    loop = asyncio.new_event_loop()
    group = f"pingpong-{uuid.uuid4().hex[:6]}"
    cons = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": group,
            "group.protocol": "consumer",
            "auto.offset.reset": "latest",
            "fetch.wait.max.ms": 500,
            "isolation.level": ISOLATION,
        }
    )
    cons.assign([TopicPartition(IN, 3)])
    prod = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 0})
    stop = threading.Event()
    to_thread: list[float] = []
    to_loop: list[float] = []
    arrived = threading.Event()
    sent_at = [0.0]

    def handler(batch_time: float) -> None:
        to_loop.append(time.perf_counter() - sent_at[0])
        loop.stop()

    def consume_thread() -> None:
        while not stop.is_set():
            # consume(n, timeout) waits until n messages or the timeout (measured: +500 ms with
            # timeout=0.5 at low load): wait with poll(), then drain what is already there.
            first = cons.poll(0.5)
            batch = [first, *cons.consume(99, timeout=0)] if first is not None else []
            if batch:
                t = time.perf_counter()
                to_thread.append(t - sent_at[0])
                loop.call_soon_threadsafe(handler, t)
                arrived.set()

    # Let the assignment settle (latest offset resolved).
    end = time.monotonic() + 3
    while time.monotonic() < end:
        cons.consume(100, timeout=0.2)
    th = threading.Thread(target=consume_thread, daemon=True)
    th.start()
    c0 = time.process_time()
    misses = 0
    for _ in range(n):
        sent_at[0] = time.perf_counter()
        prod.produce(IN, b"ping", partition=3)
        prod.poll(0)
        guard = loop.call_later(1.0, loop.stop)
        before = len(to_loop)
        loop.run_forever()  # until the handler (or the guard) stops it
        guard.cancel()
        misses += len(to_loop) == before
    cpu = (time.process_time() - c0) / n * 1e6
    stop.set()
    th.join()
    cons.close()
    a = percentiles([x * 1e6 for x in to_thread], (50, 99))
    b = percentiles([x * 1e6 for x in to_loop], (50, 99))
    return {
        "produce_to_consumer_thread_us": {"p50": a["p50"], "p99": a["p99"]},
        "produce_to_loop_handler_us": {"p50": b["p50"], "p99": b["p99"]},
        "added_by_call_soon_threadsafe_p50_us": round(b["p50"] - a["p50"], 1),
        "process_cpu_us_per_round_trip": round(cpu, 1),
        "rounds_without_delivery_in_1s": misses,
    }


def main() -> None:
    ensure_topics()
    for name, v in bridge_calls().items():
        print(f"{name:>28}: {v}", flush=True)
    for i in range(3):
        print(f"ping-pong run {i}: {ping_pong()}", flush=True)


if __name__ == "__main__":
    main()
