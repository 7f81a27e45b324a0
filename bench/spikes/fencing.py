"""KIP-447 fencing under the KIP-848 consumer protocol (confluent-kafka / librdkafka), measured.

    .venv/bin/python -m bench.spikes.fencing zombie --txn-timeout-ms 10000 --resume after-abort
    .venv/bin/python -m bench.spikes.fencing zombie --txn-timeout-ms 60000 --resume after-handover
    .venv/bin/python -m bench.spikes.fencing epoch
    .venv/bin/python -m bench.spikes.fencing failover --session-ms 3000 --heartbeat-ms 500

zombie: member A (a subprocess) owns every partition of spike.in, begins a transaction, produces to
spike.out, sends its offsets with its consumer_group_metadata() and is SIGSTOPped before the commit.
Member B joins; it gets A's partitions once A's session expires, then calls committed()
(read_committed, so OffsetFetch carries require_stable). A is SIGCONTed either after its transaction
was aborted by the coordinator (after-abort) or as soon as B owns the partitions (after-handover);
it then commits, and tries one more transaction. Steps are timestamped relative to SIGSTOP.
With --resume kill, A is SIGKILLed instead: how long B's committed() waits for A's open transaction.

epoch: our member epoch moves when another member joins; what becomes of a transaction that carries
the previous epoch's group metadata.

failover: kill -9 of a member, time until the survivor's on_assign for its partitions.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

BOOTSTRAP = os.environ.get("CEREBELUM_KAFKA", "127.0.0.1:59092")
IN, OUT = "spike.in", "spike.out"
PARTITIONS = 4
T0 = time.monotonic()


def log(who: str, msg: str) -> None:
    print(f"{time.monotonic() - T0:8.3f}s {who}: {msg}", flush=True)


def cgm_epoch(cgm: object) -> tuple[int, str]:
    """(member epoch, member id) from librdkafka's serialized group metadata ("CGMDv2:" i32 ...)."""
    raw = bytes(cgm)  # type: ignore[call-overload]
    epoch = struct.unpack("<i", raw[7:11])[0]
    member = raw[11:].split(b"\0")[1].decode()
    return epoch, member


def describe(err: KafkaError) -> str:
    return (
        f"{err.name()} code={err.code()} fatal={err.fatal()} retriable={err.retriable()} "
        f"txn_requires_abort={err.txn_requires_abort()} '{err.str()}'"
    )


def ensure_topics() -> None:
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    have = admin.list_topics(timeout=10).topics
    new = [NewTopic(t, PARTITIONS, 1) for t in (IN, OUT) if t not in have]
    for f in admin.create_topics(new).values() if new else ():
        f.result()
    p = Producer({"bootstrap.servers": BOOTSTRAP})
    for part in range(PARTITIONS):
        for i in range(5):
            p.produce(IN, value=f"m{i}".encode(), partition=part)
    p.flush(10)


def set_group_config(group: str, session_ms: int, heartbeat_ms: int) -> None:
    """KIP-848 per-group overrides via IncrementalAlterConfigs on a GROUP resource."""
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    res = ConfigResource(
        ResourceType.GROUP,
        group,
        incremental_configs=[
            ConfigEntry(
                "consumer.session.timeout.ms",
                str(session_ms),
                incremental_operation=AlterConfigOpType.SET,
            ),
            ConfigEntry(
                "consumer.heartbeat.interval.ms",
                str(heartbeat_ms),
                incremental_operation=AlterConfigOpType.SET,
            ),
        ],
    )
    for f in admin.incremental_alter_configs([res]).values():
        f.result()
    got = admin.describe_configs([ConfigResource(ResourceType.GROUP, group)])
    for f in got.values():
        cfg = f.result()
        log(
            "admin",
            f"group {group} config: session={cfg['consumer.session.timeout.ms'].value} "
            f"heartbeat={cfg['consumer.heartbeat.interval.ms'].value}",
        )


def consumer_conf(group: str, **extra: object) -> dict[str, object]:
    conf: dict[str, object] = {
        "bootstrap.servers": BOOTSTRAP,
        "group.id": group,
        "group.protocol": "consumer",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    conf.update(extra)
    return conf


def wait_assigned(consumer: Consumer, want: int, who: str, timeout: float = 60.0) -> set[int]:
    owned: set[int] = set()

    def on_assign(c: Consumer, parts: list[TopicPartition]) -> None:
        owned.update(p.partition for p in parts)
        log(
            who,
            f"on_assign {[p.partition for p in parts]} epoch={cgm_epoch(c.consumer_group_metadata())[0]}",  # noqa: E501
        )

    def on_revoke(c: Consumer, parts: list[TopicPartition]) -> None:
        owned.difference_update(p.partition for p in parts)
        log(who, f"on_revoke {[p.partition for p in parts]}")

    def on_lost(c: Consumer, parts: list[TopicPartition]) -> None:
        owned.difference_update(p.partition for p in parts)
        log(who, f"on_lost {[p.partition for p in parts]}")

    consumer.subscribe([IN], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    deadline = time.monotonic() + timeout
    while len(owned) < want and time.monotonic() < deadline:
        consumer.poll(0.1)
    return owned


# ---------------------------------------------------------------- zombie (question 1)


def member_a(group: str, txn_timeout_ms: int) -> None:
    """The zombie. Reads commands on stdin: 'commit', 'next', 'quit'."""
    consumer = Consumer(consumer_conf(group, **{"client.id": "A"}))
    owned = wait_assigned(consumer, PARTITIONS, "A")
    producer = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "transactional.id": f"spike-a-{group}",
            "transaction.timeout.ms": txn_timeout_ms,
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(OUT, value=b"from-A-txn1", partition=0)
    offsets = [TopicPartition(IN, p, 3) for p in sorted(owned)]
    cgm = consumer.consumer_group_metadata()
    producer.send_offsets_to_transaction(offsets, cgm, 30)
    log("A", f"txn1 open, offsets sent with epoch/member {cgm_epoch(cgm)}; READY")
    print("READY", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        log("A", f"command {cmd}")
        try:
            if cmd == "commit":
                t = time.monotonic()
                producer.commit_transaction(30)
                log("A", f"txn1 commit OK in {time.monotonic() - t:.3f}s")
            elif cmd == "next":
                cgm = consumer.consumer_group_metadata()
                log("A", f"txn2 uses epoch/member {cgm_epoch(cgm)}")
                producer.begin_transaction()
                producer.produce(OUT, value=b"from-A-txn2", partition=0)
                t = time.monotonic()
                producer.send_offsets_to_transaction(
                    [TopicPartition(IN, p, 4) for p in sorted(owned)], cgm, 30
                )
                log("A", f"txn2 send_offsets OK in {time.monotonic() - t:.3f}s")
                producer.commit_transaction(30)
                log("A", "txn2 commit OK")
            elif cmd == "poll":
                consumer.poll(1.0)
                log(
                    "A", f"after poll: epoch/member {cgm_epoch(consumer.consumer_group_metadata())}"
                )
            elif cmd == "quit":
                break
        except KafkaException as exc:
            err = exc.args[0]
            log("A", f"{cmd} FAILED: {describe(err)}")
            if err.txn_requires_abort():
                try:
                    producer.abort_transaction(30)
                    log("A", "abort_transaction OK")
                except KafkaException as exc2:
                    log("A", f"abort FAILED: {describe(exc2.args[0])}")
        print("DONE", flush=True)
    consumer.close()


def zombie(args: argparse.Namespace) -> None:
    ensure_topics()
    group = f"spike-zombie-{uuid.uuid4().hex[:8]}"
    set_group_config(group, args.session_ms, args.heartbeat_ms)
    a = subprocess.Popen(
        [sys.executable, "-m", "bench.spikes.fencing", "member-a", group, str(args.txn_timeout_ms)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert a.stdin and a.stdout

    def pump_until(token: str) -> None:
        assert a.stdout
        for line in a.stdout:
            print("    | " + line.rstrip(), flush=True)
            if line.strip() == token:
                return

    pump_until("READY")
    kill = args.resume == "kill"
    os.kill(a.pid, signal.SIGKILL if kill else signal.SIGSTOP)
    global T0
    T0 = time.monotonic()
    log("main", f"{'SIGKILL' if kill else 'SIGSTOP'} A (txn timeout {args.txn_timeout_ms} ms)")
    b = Consumer(consumer_conf(group, **{"client.id": "B"}))
    owned = wait_assigned(b, PARTITIONS, "B", timeout=120)
    log("B", f"owns {sorted(owned)}")
    tps = [TopicPartition(IN, p) for p in range(PARTITIONS)]
    result: dict[str, object] = {}

    def fetch() -> None:
        t = time.monotonic()
        try:
            got = b.committed(tps, timeout=args.fetch_timeout)
            result["offsets"] = [(p.partition, p.offset, p.error) for p in got]
        except KafkaException as exc:
            result["error"] = describe(exc.args[0])
        result["took"] = time.monotonic() - t
        log(
            "B",
            f"committed() returned after {result['took']:.3f}s: {result.get('offsets') or result.get('error')}",  # noqa: E501
        )

    fetcher = threading.Thread(target=fetch)
    fetcher.start()
    if kill:
        fetcher.join()
        a.wait()
        b.close()
        return
    if args.resume == "after-handover":
        time.sleep(1.0)
        os.kill(a.pid, signal.SIGCONT)
        log("main", "SIGCONT A (B owns the partitions, A's txn still open)")
        a.stdin.write("commit\n")
        pump_until("DONE")
    else:
        while fetcher.is_alive():
            b.poll(0.1)
        os.kill(a.pid, signal.SIGCONT)
        log("main", "SIGCONT A (after B's committed() returned)")
        a.stdin.write("commit\n")
        pump_until("DONE")
    while fetcher.is_alive():
        b.poll(0.1)
    a.stdin.write("next\n")
    pump_until("DONE")
    a.stdin.write("poll\n")
    pump_until("DONE")
    a.stdin.write("next\n")
    pump_until("DONE")
    a.stdin.write("quit\n")
    a.wait(30)
    # What B reads from spike.out (read_committed) and its committed offsets now.
    b2 = Consumer(consumer_conf(f"{group}-reader"))
    b2.assign([TopicPartition(OUT, 0, 0)])
    seen = []
    end = time.monotonic() + 3
    while time.monotonic() < end:
        m = b2.poll(0.2)
        if m is not None and not m.error():
            seen.append(m.value().decode())
    log("main", f"committed records visible on {OUT}[0] (all runs so far): {seen[-6:]}")
    log("B", f"committed now: {[(p.partition, p.offset) for p in b.committed(tps, timeout=10)]}")
    b.close()
    b2.close()


# ---------------------------------------------------------------- epoch (question 2)


def member_c(group: str, hold_s: float) -> None:
    c = Consumer(consumer_conf(group, **{"client.id": "C"}))
    wait_assigned(c, 1, "C")
    end = time.monotonic() + hold_s
    while time.monotonic() < end:
        c.poll(0.1)
    c.close()


def epoch(args: argparse.Namespace) -> None:
    ensure_topics()
    group = f"spike-epoch-{uuid.uuid4().hex[:8]}"
    set_group_config(group, args.session_ms, args.heartbeat_ms)
    events: list[str] = []

    a = Consumer(consumer_conf(group, **{"client.id": "A"}))
    owned: set[int] = set()

    def on_assign(c: Consumer, parts: list[TopicPartition]) -> None:
        owned.update(p.partition for p in parts)
        ep = cgm_epoch(c.consumer_group_metadata())[0]
        log("A", f"on_assign {[p.partition for p in parts]} (cgm epoch inside callback {ep})")
        events.append("assign")

    def on_revoke(c: Consumer, parts: list[TopicPartition]) -> None:
        owned.difference_update(p.partition for p in parts)
        ep = cgm_epoch(c.consumer_group_metadata())[0]
        log("A", f"on_revoke {[p.partition for p in parts]} (cgm epoch inside callback {ep})")
        if args.commit_in_revoke and producer_box:
            prod, cgm_old = producer_box
            t = time.monotonic()
            try:
                prod.send_offsets_to_transaction(
                    [TopicPartition(IN, p.partition, 2) for p in parts], cgm_old, 30
                )
                prod.commit_transaction(30)
                log(
                    "A", f"  in on_revoke: old-epoch txn committed OK ({time.monotonic() - t:.3f}s)"
                )
            except KafkaException as exc:
                log("A", f"  in on_revoke: old-epoch txn FAILED {describe(exc.args[0])}")
            producer_box.clear()
        events.append("revoke")

    producer_box: list = []
    a.subscribe([IN], on_assign=on_assign, on_revoke=on_revoke)
    while len(owned) < PARTITIONS:
        a.poll(0.1)
    time.sleep(0.5)
    a.poll(0.1)
    prod = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": f"spike-epoch-{group}"})
    prod.init_transactions(30)

    # Case 1: txn begun with the old epoch; offsets sent AFTER the epoch moved (C joined, A lost a
    # partition and acknowledged the revocation).
    cgm_old = a.consumer_group_metadata()
    log("A", f"txn1 begins; cgm epoch {cgm_epoch(cgm_old)[0]}")
    prod.begin_transaction()
    prod.produce(OUT, value=b"epoch-txn1", partition=1)
    if args.commit_in_revoke:
        producer_box[:] = [prod, cgm_old]
    c = subprocess.Popen([sys.executable, "-m", "bench.spikes.fencing", "member-c", group, "20"])
    while "revoke" not in events:
        a.poll(0.1)
    # Let the heartbeat that acknowledges the revocation go out and come back.
    end = time.monotonic() + 3
    while time.monotonic() < end:
        a.poll(0.1)
    log(
        "A",
        f"after rebalance: owned {sorted(owned)}, cgm epoch now {cgm_epoch(a.consumer_group_metadata())[0]}",  # noqa: E501
    )
    if not args.commit_in_revoke:
        try:
            prod.send_offsets_to_transaction(
                [TopicPartition(IN, p, 2) for p in sorted(owned)], cgm_old, 30
            )
            log("A", "txn1 send_offsets with OLD cgm: OK")
            prod.commit_transaction(30)
            log("A", "txn1 commit OK")
        except KafkaException as exc:
            err = exc.args[0]
            log("A", f"txn1 send_offsets with OLD cgm FAILED: {describe(err)}")
            if err.txn_requires_abort():
                prod.abort_transaction(30)
                log("A", "txn1 aborted")
    # Case 2: same, with the fresh metadata.
    cgm_new = a.consumer_group_metadata()
    prod.begin_transaction()
    prod.produce(OUT, value=b"epoch-txn2", partition=1)
    try:
        prod.send_offsets_to_transaction(
            [TopicPartition(IN, p, 2) for p in sorted(owned)], cgm_new, 30
        )
        prod.commit_transaction(30)
        log("A", f"txn2 with NEW cgm (epoch {cgm_epoch(cgm_new)[0]}): OK")
    except KafkaException as exc:
        log("A", f"txn2 with NEW cgm FAILED: {describe(exc.args[0])}")
        prod.abort_transaction(30)
    # Case 3: epoch bump without any change to A's partitions: C leaves (A gains, no revocation).
    cgm_before = a.consumer_group_metadata()
    prod.begin_transaction()
    prod.produce(OUT, value=b"epoch-txn3", partition=1)
    c.send_signal(signal.SIGTERM)
    c.wait(30)
    events.clear()
    end = time.monotonic() + 15
    while "assign" not in events and time.monotonic() < end:
        a.poll(0.1)
    end = time.monotonic() + 1
    while time.monotonic() < end:
        a.poll(0.1)
    log(
        "A",
        f"after C left: owned {sorted(owned)}, cgm epoch {cgm_epoch(a.consumer_group_metadata())[0]} (txn3 began with {cgm_epoch(cgm_before)[0]})",  # noqa: E501
    )
    try:
        prod.send_offsets_to_transaction(
            [TopicPartition(IN, p, 2) for p in sorted(owned)], cgm_before, 30
        )
        prod.commit_transaction(30)
        log("A", "txn3 (old cgm, A only GAINED partitions) OK")
    except KafkaException as exc:
        err = exc.args[0]
        log("A", f"txn3 (old cgm, A only GAINED partitions) FAILED: {describe(err)}")
        if err.txn_requires_abort():
            prod.abort_transaction(30)
    a.close()


# ---------------------------------------------------------------- failover (question 4)


def member_k(group: str) -> None:
    c = Consumer(consumer_conf(group, **{"client.id": "K"}))
    wait_assigned(c, 1, "K")
    print("OWNS", flush=True)
    while True:
        c.poll(0.1)


def failover(args: argparse.Namespace) -> None:
    ensure_topics()
    out = []
    for run in range(args.runs):
        group = f"spike-failover-{uuid.uuid4().hex[:8]}"
        set_group_config(group, args.session_ms, args.heartbeat_ms)
        b = Consumer(consumer_conf(group, **{"client.id": "B"}))
        owned: set[int] = set()
        assigned_at: list[float] = []

        def on_assign(c: Consumer, parts: list[TopicPartition], _o=owned, _a=assigned_at) -> None:
            _o.update(p.partition for p in parts)
            _a.append(time.monotonic())

        def on_revoke(c: Consumer, parts: list[TopicPartition], _o=owned) -> None:
            _o.difference_update(p.partition for p in parts)

        b.subscribe([IN], on_assign=on_assign, on_revoke=on_revoke)
        while len(owned) < PARTITIONS:
            b.poll(0.1)
        k = subprocess.Popen(
            [sys.executable, "-m", "bench.spikes.fencing", "member-k", group],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert k.stdout
        k.stdout.readline()
        end = time.monotonic() + 10
        while len(owned) == PARTITIONS or time.monotonic() < end:
            b.poll(0.1)
            if len(owned) < PARTITIONS and time.monotonic() > end - 8:
                break
        time.sleep(1)
        b.poll(0.1)
        lost = PARTITIONS - len(owned)
        t_kill = time.monotonic()
        os.kill(k.pid, signal.SIGKILL)
        k.wait()
        assigned_at.clear()
        while len(owned) < PARTITIONS and time.monotonic() - t_kill < 120:
            b.poll(0.02)
        took = assigned_at[-1] - t_kill if assigned_at else float("nan")
        log("failover", f"run {run}: K had {lost} partition(s); kill -9 -> B on_assign {took:.3f}s")
        out.append(took)
        b.close()
    print(
        json.dumps(
            {"session_ms": args.session_ms, "heartbeat_ms": args.heartbeat_ms, "took_s": out}
        )
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "member-a":
        member_a(sys.argv[2], int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "member-c":
        member_c(sys.argv[2], float(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "member-k":
        member_k(sys.argv[2])
        return
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    z = sub.add_parser("zombie")
    z.add_argument("--txn-timeout-ms", type=int, default=10000)
    z.add_argument(
        "--resume", choices=["after-abort", "after-handover", "kill"], default="after-abort"
    )
    z.add_argument("--fetch-timeout", type=float, default=120.0)
    e = sub.add_parser("epoch")
    e.add_argument("--commit-in-revoke", action="store_true")
    f = sub.add_parser("failover")
    f.add_argument("--runs", type=int, default=3)
    for p in (z, e, f):
        p.add_argument("--session-ms", type=int, default=3000)
        p.add_argument("--heartbeat-ms", type=int, default=500)
    args = ap.parse_args()
    {"zombie": zombie, "epoch": epoch, "failover": failover}[args.cmd](args)


if __name__ == "__main__":
    main()
