"""confluent-kafka Consumer: which calls may another thread make while one thread is in consume()?
And does pause() drop messages already fetched for that partition?

    .venv/bin/python -m bench.spikes.threads
"""

from __future__ import annotations

import os
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.spikes.fencing import BOOTSTRAP, IN, PARTITIONS, cgm_epoch, ensure_topics, log


def main() -> None:
    ensure_topics()
    p = Producer({"bootstrap.servers": BOOTSTRAP})
    for part in range(PARTITIONS):
        for i in range(200):
            p.produce(IN, value=f"{part}:{i}".encode(), partition=part)
    p.flush(10)
    group = f"spike-threads-{uuid.uuid4().hex[:8]}"
    c = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": group,
            "group.protocol": "consumer",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # Fetch a lot ahead so the local queue holds messages when we pause.
            "queued.min.messages": 100000,
        }
    )
    cb_threads: list[str] = []
    owned: set[int] = set()

    def on_assign(cons: Consumer, parts: list[TopicPartition]) -> None:
        cb_threads.append(f"on_assign in {threading.current_thread().name}")
        owned.update(x.partition for x in parts)

    c.subscribe([IN], on_assign=on_assign)
    while len(owned) < PARTITIONS:
        c.poll(0.1)
    log("main", f"callbacks ran in: {cb_threads}")
    # Take one message of partition 0 so the app position is known, let fetches fill the queue.
    got = []
    while not got:
        m = c.poll(1)
        if m is not None and not m.error():
            got.append((m.partition(), m.offset()))
    time.sleep(1.0)
    log("main", f"first message {got[0]}; local queue filled for 1 s")

    # Thread X blocks in consume(); main thread calls the other APIs meanwhile.
    consumed: list[tuple[int, int]] = []
    started = threading.Event()

    def consume_loop() -> None:
        started.set()
        t = time.monotonic()
        while time.monotonic() - t < 4:
            for m in c.consume(num_messages=1000, timeout=2.0):
                if not m.error():
                    consumed.append((m.partition(), m.offset()))

    x = threading.Thread(target=consume_loop, name="consumer-thread")
    # Pause every partition first so consume() blocks with nothing to return.
    tps = [TopicPartition(IN, q) for q in range(PARTITIONS)]
    c.pause(tps)
    x.start()
    started.wait()
    time.sleep(0.3)
    for name, fn in [
        ("consumer_group_metadata", lambda: cgm_epoch(c.consumer_group_metadata())),
        ("committed", lambda: [t.offset for t in c.committed(tps, timeout=5)]),
        ("position", lambda: [t.offset for t in c.position(tps)]),
        ("seek p1->10", lambda: c.seek(TopicPartition(IN, 1, 10))),
        ("resume p1", lambda: c.resume([TopicPartition(IN, 1)])),
        ("assignment", lambda: len(c.assignment())),
    ]:
        t = time.monotonic()
        try:
            r = fn()
            log("other-thread", f"{name} -> {r} in {1000 * (time.monotonic() - t):.1f} ms")
        except Exception as exc:  # noqa: BLE001 - we report what happens
            log("other-thread", f"{name} RAISED {exc!r} in {1000 * (time.monotonic() - t):.1f} ms")
    x.join()
    by_part: dict[int, list[int]] = {}
    for part, off in consumed:
        by_part.setdefault(part, []).append(off)
    log(
        "main",
        "consumed while others paused: "
        + str({k: (min(v), max(v), len(v)) for k, v in by_part.items()}),
    )
    # pause() purge: partition 2 has a full local queue now? Resume all, read a few of p2, pause
    # p2, wait, resume p2: the next message of p2 must follow the last one we got (nothing lost).
    c.resume(tps)
    seen2: list[int] = []
    end = time.monotonic() + 5
    while len(seen2) < 5 and time.monotonic() < end:
        m = c.poll(0.5)
        if m is not None and not m.error() and m.partition() == 2:
            seen2.append(m.offset())
    c.pause([TopicPartition(IN, 2)])
    leaked = []
    end = time.monotonic() + 2
    while time.monotonic() < end:
        m = c.poll(0.1)
        if m is not None and not m.error() and m.partition() == 2:
            leaked.append(m.offset())
    log(
        "main",
        f"p2 read {seen2}; after pause(p2), p2 messages still delivered: {leaked[:5]} ({len(leaked)})",  # noqa: E501
    )
    c.resume([TopicPartition(IN, 2)])
    nxt = None
    end = time.monotonic() + 5
    while nxt is None and time.monotonic() < end:
        m = c.poll(0.5)
        if m is not None and not m.error() and m.partition() == 2:
            nxt = m.offset()
    log("main", f"after resume(p2) next p2 offset {nxt} (last delivered {seen2[-1]})")
    c.close()
    os._exit(0)


if __name__ == "__main__":
    main()
