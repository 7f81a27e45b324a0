"""Load driver for the faust spike: start N W3 executions, time them, check what was recorded.

Works for both engines, which read the same start-command (cerebelum.core.commands.start_command's
JSON, key = execution id) and write events of the same shape ({"execution_id", "version",
"type", "step", ...}):

    cerebelum: --commands cerebelum.commands --events cerebelum.events
    faust:     --commands spike.commands     --events spike.events

1. Follows the events topic (read_committed, all partitions, from its current end).
2. Warm-up: one execution per partition (64), waits for all of them, so every partition is
   owned and restored before the clock starts.
3. Produces N start-commands as fast as it can, and reads until N distinct ExecutionCompleted
   (or the timeout), then keeps reading --linger seconds to catch late duplicates.
4. Throughput = N / (last ExecutionCompleted read - first produce).
   Duplicates: an execution completed twice, a step result (StepCompleted per execution and
   step) recorded twice, an (execution, version) pair seen twice. Missing: no completion.
   Wrong: an output other than {"n": (n + 1) * 2}.
5. --kill-pid PID: kill -9 PID once --kill-at of the N have completed, then report per-partition
   resume gaps (first completion after the kill on each partition that still had work).
6. --cpu PID[:label]: CPU seconds (utime + stime from /proc/PID/stat) of those processes between
   the first produce and the last completion (for a killed process: until the kill).

Prints one JSON object (and writes it to --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

CLK_TCK = os.sysconf("SC_CLK_TCK")


def partition_of(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def start_command(execution_id: str, workflow: str, inputs: Any) -> bytes:
    # Byte for byte what cerebelum.core.commands.start_command writes (schema 1).
    return orjson.dumps(
        {
            "type": "StartExecution",
            "schema": 1,
            "execution_id": execution_id,
            "workflow": workflow,
            "inputs": inputs,
        }
    )


def cpu_seconds(pid: int) -> float | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies over all cores, from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]  # idle + iowait
    total = sum(parts[:8])
    return total - idle, total


class Tracker:
    def __init__(self, prefix: str, n: int, partitions: int) -> None:
        self.prefix = prefix
        self.n = n
        self.partitions = partitions
        self.sent_at: dict[str, float] = {}
        self.partition: dict[str, int] = {}
        self.inputs: dict[str, int] = {}
        self.completed: dict[str, float] = {}
        self.completions: Counter[str] = Counter()
        self.step_results: Counter[tuple[str, str]] = Counter()
        self.versions: Counter[tuple[str, int]] = Counter()
        self.wrong: list[str] = []
        self.done = asyncio.Event()
        self.kill_at_count: int | None = None
        self.kill_pid: int | None = None
        self.kill_time: float | None = None
        self.pending_at_kill: dict[int, int] = {}
        self.cpu_at_kill: float | None = None
        self.completion_times: list[tuple[float, int]] = []

    def observe(self, value: bytes, now: float) -> None:
        e = orjson.loads(value)
        eid = e.get("execution_id", "")
        if not eid.startswith(self.prefix):
            return
        kind = e.get("type")
        v = e.get("version")
        if v is not None:
            self.versions[(eid, v)] += 1
        if kind == "StepCompleted":
            self.step_results[(eid, e.get("step"))] += 1
        elif kind == "ExecutionCompleted":
            self.completions[eid] += 1
            if eid not in self.completed:
                self.completed[eid] = now
                self.completion_times.append((now, self.partition.get(eid, -1)))
                n = self.inputs.get(eid)
                if n is not None and e.get("output") != {"n": (n + 1) * 2}:
                    self.wrong.append(eid)
                if self.kill_at_count is not None and self.kill_time is None:
                    if len(self.completed) >= self.kill_at_count:
                        self._kill(now)
                if len(self.completed) >= self.n:
                    self.done.set()

    def _kill(self, now: float) -> None:
        assert self.kill_pid is not None
        self.cpu_at_kill = cpu_seconds(self.kill_pid)
        os.kill(self.kill_pid, signal.SIGKILL)
        self.kill_time = now
        self.kill_wall = time.time()
        pending: Counter[int] = Counter()
        for eid, p in self.partition.items():
            if eid not in self.completed:
                pending[p] += 1
        self.pending_at_kill = dict(pending)


async def follow(consumer: AIOKafkaConsumer, trackers: list[Tracker], stop: asyncio.Event) -> None:
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=100, max_records=20_000)
        now = time.monotonic()
        for records in batches.values():
            for r in records:
                for t in trackers:
                    t.observe(r.value, now)


async def produce(
    producer: AIOKafkaProducer, topic: str, tracker: Tracker, ids: list[str], workflow: str
) -> None:
    futures = []
    for i, eid in enumerate(ids):
        key = eid.encode()
        tracker.partition[eid] = partition_of(key, tracker.partitions)
        tracker.inputs[eid] = i
        tracker.sent_at[eid] = time.monotonic()
        futures.append(await producer.send(topic, start_command(eid, workflow, {"n": i}), key))
    await asyncio.gather(*futures)


def warmup_ids(prefix: str, partitions: int) -> list[str]:
    """One id per partition."""
    chosen: dict[int, str] = {}
    k = 0
    while len(chosen) < partitions:
        eid = f"{prefix}{k}"
        chosen.setdefault(partition_of(eid.encode(), partitions), eid)
        k += 1
    return [chosen[p] for p in range(partitions)]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    run = args.run_id or f"r{int(time.time())}"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    tps = [TopicPartition(args.events, p) for p in range(args.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    stop = asyncio.Event()
    warm = Tracker(f"{run}-warm-", args.partitions, args.partitions)
    timed = Tracker(f"{run}-x-", args.n, args.partitions)
    reader = asyncio.get_running_loop().create_task(follow(consumer, [warm, timed], stop))
    result: dict[str, Any] = {"engine": args.label, "run_id": run, "n": args.n}
    try:
        # -- warm-up ---------------------------------------------------------------------
        t = time.monotonic()
        await produce(producer, args.commands, warm, warmup_ids(warm.prefix, args.partitions), args.workflow)
        try:
            await asyncio.wait_for(warm.done.wait(), args.warmup_timeout)
        except asyncio.TimeoutError:
            result["error"] = f"warm-up: {len(warm.completed)}/{args.partitions} completed"
            return result
        result["warmup_s"] = round(time.monotonic() - t, 2)
        await asyncio.sleep(args.settle)

        # -- timed run -------------------------------------------------------------------
        cpu_pids = {}
        for spec in args.cpu:
            pid, _, label = spec.partition(":")
            cpu_pids[label or pid] = int(pid)
        if args.kill_pid:
            timed.kill_pid = args.kill_pid
            timed.kill_at_count = max(1, int(args.kill_at * args.n))
        cpu0 = {label: cpu_seconds(pid) for label, pid in cpu_pids.items()}
        m0 = machine_cpu()
        ids = [f"{timed.prefix}{i:06d}" for i in range(args.n)]
        t0 = time.monotonic()
        await produce(producer, args.commands, timed, ids, args.workflow)
        t_produced = time.monotonic()
        try:
            await asyncio.wait_for(timed.done.wait(), args.timeout)
        except asyncio.TimeoutError:
            pass
        t_end = time.monotonic()
        cpu1 = {label: cpu_seconds(pid) for label, pid in cpu_pids.items()}
        m1 = machine_cpu()
        await asyncio.sleep(args.linger)  # late duplicates
    finally:
        stop.set()
        await asyncio.gather(reader, return_exceptions=True)
        await producer.stop()
        await consumer.stop()

    last = max(timed.completed.values()) if timed.completed else t_end
    elapsed = last - t0
    lat = [timed.completed[e] - timed.sent_at[e] for e in timed.completed]
    cpu: dict[str, float | None] = {}
    for label, pid in cpu_pids.items():
        a, b = cpu0[label], cpu1[label]
        if pid == args.kill_pid and timed.cpu_at_kill is not None:
            b = timed.cpu_at_kill
        cpu[label] = round(b - a, 2) if a is not None and b is not None else None
    result.update(
        {
            "produce_s": round(t_produced - t0, 3),
            "elapsed_s": round(elapsed, 3),
            "completed": len(timed.completed),
            "executions_per_s": round(len(timed.completed) / elapsed, 1) if elapsed > 0 else None,
            "latency_under_load_s": {
                "p50": round(pct(lat, 0.5) or 0, 3),
                "p99": round(pct(lat, 0.99) or 0, 3),
                "max": round(max(lat), 3) if lat else None,
            },
            "missing": args.n - len(timed.completed),
            "missing_examples": sorted(set(ids) - set(timed.completed))[:10],
            "wrong_output": len(timed.wrong),
            "duplicate_completions": sum(1 for c in timed.completions.values() if c > 1),
            "duplicate_step_results": sum(1 for c in timed.step_results.values() if c > 1),
            "duplicate_versions": sum(1 for c in timed.versions.values() if c > 1),
            "events_seen": sum(timed.versions.values()),
            "cpu_s": cpu,
            # Whole machine (2 cores, shared with other engineers' tests): share of CPU busy
            # during the timed run, and the CPU seconds of everything not listed in cpu_s.
            "machine_busy_fraction": round((m1[0] - m0[0]) / max(1, m1[1] - m0[1]), 3),
            "machine_cpu_s": round((m1[0] - m0[0]) / CLK_TCK, 2),
        }
    )
    if args.kill_pid:
        result["kill"] = kill_report(timed, t0, last)
    return result


def kill_report(t: Tracker, t0: float, last: float) -> dict[str, Any]:
    if t.kill_time is None:
        return {"killed": False}
    k = t.kill_time
    first_after: dict[int, float] = {}
    for when, p in t.completion_times:
        # >=: completions read in the same fetch as the one that triggered the kill count as
        # after it (the kill happens while that batch is being read).
        if when >= k and p not in first_after:
            first_after[p] = when - k
    gaps = {p: first_after.get(p) for p in t.pending_at_kill}
    known = [g for g in gaps.values() if g is not None]
    stalled = sorted((round(g, 2), p) for p, g in gaps.items() if g is not None and g > args_stall)
    buckets: Counter[int] = Counter()
    for when, _ in t.completion_times:
        buckets[int((when - k) // 1)] += 1
    return {
        "killed": True,
        "kill_at_s": round(k - t0, 3),
        "kill_wall_clock": time.strftime("%H:%M:%S", time.localtime(t.kill_wall))
        + f".{int(t.kill_wall * 1000) % 1000:03d}",
        "completed_before_kill": t.kill_at_count,
        "partitions_with_work_at_kill": len(t.pending_at_kill),
        "partitions_never_resumed": sorted(p for p, g in gaps.items() if g is None),
        "resume_s_max": round(max(known), 3) if known else None,
        "resume_s_median": round(statistics.median(known), 3) if known else None,
        f"stalled_partitions_over_{args_stall}s": len(stalled),
        "stalled_resume_s_median": round(statistics.median(g for g, _ in stalled), 3) if stalled else None,
        "kill_to_last_completion_s": round(last - k, 3),
        "completions_per_second_around_kill": {
            str(b): buckets[b] for b in sorted(buckets) if -3 <= b <= 40
        },
    }


args_stall = 3.0


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", default="engine")
    p.add_argument("--bootstrap", default=os.environ.get("SPIKE_KAFKA", "127.0.0.1:29092"))
    p.add_argument("--commands", default="cerebelum.commands")
    p.add_argument("--events", default="cerebelum.events")
    p.add_argument("--workflow", default="w3")
    p.add_argument("--partitions", type=int, default=64)
    p.add_argument("-n", type=int, default=20_000)
    p.add_argument("--run-id")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for the timed run")
    p.add_argument("--warmup-timeout", type=float, default=180.0)
    p.add_argument("--settle", type=float, default=1.0, help="pause after the warm-up")
    p.add_argument("--linger", type=float, default=3.0, help="keep reading after the last completion")
    p.add_argument("--cpu", action="append", default=[], metavar="PID[:LABEL]")
    p.add_argument("--kill-pid", type=int)
    p.add_argument("--kill-at", type=float, default=1 / 3, help="fraction completed before the kill")
    p.add_argument("--stall", type=float, default=3.0, help="a partition resuming later is 'stalled'")
    p.add_argument("--out", type=Path)
    return p.parse_args(argv)


if __name__ == "__main__":
    ns = parse(sys.argv[1:])
    args_stall = ns.stall
    res = asyncio.run(main(ns))
    text = json.dumps(res, indent=2)
    print(text)
    if ns.out:
        ns.out.parent.mkdir(parents=True, exist_ok=True)
        ns.out.write_text(text + "\n")
