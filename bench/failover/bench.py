"""Failover benchmark: kill -9 a worker holding N live executions, time its partitions' resume.

    .venv/bin/python -m bench.failover --bootstrap 127.0.0.1:49092 \\
        --sizes 1000,10000,50000 --session-timeouts 10000,3000 --runs 3

Each run, on fresh topics (deleted and recreated: never point this at a shared broker):

1. start two workers (`cerebelum worker --app bench.failover.app`) and wait until they have
   split the 64 partitions between them;
2. park N executions (an hour-long durable sleep) on the partitions of the one to be killed,
   and N on the other's (--layout even; --layout victim parks only the first N), and wait until
   the group's committed offsets show every start-command processed;
3. time `restore_partitions` over all 64 partitions of cerebelum.state (restore throughput),
   the workers idle meanwhile;
4. follow cerebelum.events (read_committed) from its end, then kill -9 the victim and at once
   produce one probe start-command to each of the 64 partitions;
5. per partition the victim owned: resume = time of the first committed event of its probe
   minus the time of the kill; and from the survivor's log: when it was revoked (it saw the
   rebalance), assigned, how long its restore took, and when it owned the partitions again.

Prints one JSON document (every run and a per-setting median summary), writes it to
bench/failover/results/failover-<stamp>.json and draws bench/failover/results/failover-<stamp>.png.
A benchmark, not a test: nothing is asserted about time.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from cerebelum.admin.topics import apply_topics, load_declarations
from cerebelum.client import partition_for
from cerebelum.config import Settings
from cerebelum.constants import DEFAULT_NAMES, PARTITIONS
from cerebelum.core.commands import start_command
from cerebelum.worker.kafka_config import restore_config
from cerebelum.worker.ranges import parse_ranges
from cerebelum.worker.restore import restore_partitions

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = HERE / "results"
ALL = frozenset(range(PARTITIONS))
# The broker other engineers share: the benchmark deletes topics, so it refuses to touch it.
SHARED_BROKER_PORTS = {"19092"}
# Long enough for any rebalance on a loaded 2-core box; a run that needs more is reported as
# partitions that never resumed, not waited for forever.
RESUME_TIMEOUT_S = 120


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- topics ----------------------------------------------------------------------------------


async def fresh_topics(bootstrap: str) -> None:
    """Delete Cerebelum's topics and create them again as declared: every run starts empty."""
    specs = load_declarations()
    names = [s.name for s in specs]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        present = [n for n in names if n in set(await admin.list_topics())]
        if present:
            await admin.delete_topics(present)
        deadline = time.monotonic() + 60
        while set(names) & set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise RuntimeError("topics were not deleted within 60 s")
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
    for attempt in range(20):  # deletion finishes asynchronously on the broker
        try:
            await apply_topics(bootstrap, specs)
            return
        except Exception:
            if attempt == 19:
                raise
            await asyncio.sleep(0.5)


# -- workers ---------------------------------------------------------------------------------

_OWNERSHIP = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ cerebelum\.worker\.app: "
    r"(revoked|assigned|owning) partitions (\S+)"
)
_RESTORED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ cerebelum\.worker\.restore: restored (\d+) "
    r"partitions: (\d+) executions.*? from (\d+) records in ([\d.]+)s"
)


def log_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


class WorkerProcess:
    def __init__(self, name: str, log_dir: Path, env: dict[str, str]) -> None:
        self.log = log_dir / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cerebelum", "worker", "--app", "bench.failover.app"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def lines(self) -> list[str]:
        try:
            return self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def ownership(self) -> list[tuple[float, str, frozenset[int]]]:
        out = []
        for line in self.lines():
            m = _OWNERSHIP.match(line)
            if m:
                out.append((log_time(m.group(1)), m.group(2), parse_ranges(m.group(3))))
        return out

    def restores(self) -> list[dict[str, float]]:
        out = []
        for line in self.lines():
            m = _RESTORED.match(line)
            if m:
                out.append(
                    {
                        "at": log_time(m.group(1)),
                        "partitions": int(m.group(2)),
                        "executions": int(m.group(3)),
                        "records": int(m.group(4)),
                        "seconds": float(m.group(5)),
                    }
                )
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def settled(workers: list[WorkerProcess]) -> list[frozenset[int]] | None:
    """Each worker's partitions once all own what they were assigned and together own all 64."""
    owned = []
    for w in workers:
        if w.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {w.proc.returncode}; see {w.log}")
        events = w.ownership()
        # Incremental assignment (KIP-848): "assigned X" names the whole assignment after the
        # change, "revoked Y" takes Y away; the worker has settled once it owns what is left.
        current: frozenset[int] = frozenset()
        for _, kind, parts in events:
            if kind == "assigned":
                current = parts
            elif kind == "revoked":
                current = current - parts
        if not events or events[-1][1] != "owning" or not current or events[-1][2] != current:
            return None
        owned.append(current)
    union: set[int] = set()
    for parts in owned:
        if union & parts:
            return None
        union |= parts
    return owned if union == ALL else None


async def wait_settled(workers: list[WorkerProcess], timeout: float = 90) -> list[frozenset[int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owned = settled(workers)
        if owned is not None:
            return owned
        await asyncio.sleep(0.2)
    raise RuntimeError(
        f"the workers did not settle within {timeout}s; see {[str(w.log) for w in workers]}"
    )


# -- parking and probing ---------------------------------------------------------------------


def ids_on(partitions: frozenset[int], count: int, prefix: str) -> list[str]:
    """`count` fresh execution ids whose partitions are in `partitions`."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        eid = f"{prefix}-{i}"
        i += 1
        if partition_for(eid) in partitions:
            out.append(eid)
    return out


def probe_ids(prefix: str) -> dict[int, str]:
    """One execution id per partition."""
    out: dict[int, str] = {}
    i = 0
    while len(out) < PARTITIONS:
        eid = f"{prefix}-{i}"
        i += 1
        out.setdefault(partition_for(eid), eid)
    return out


async def start_producer(bootstrap: str) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        # Batching for the bulk park; the probes are 64 records sent at once anyway.
        linger_ms=5,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    # Fetch the topic's metadata now, so the first send after the kill does not wait for it.
    await producer.partitions_for(DEFAULT_NAMES.commands)
    return producer


async def produce_starts(producer: AIOKafkaProducer, ids: list[str]) -> None:
    for chunk in range(0, len(ids), 5_000):
        acks = [
            await producer.send(DEFAULT_NAMES.commands, start_command(eid, "parked", {}), eid.encode())
            for eid in ids[chunk : chunk + 5_000]
        ]
        await asyncio.gather(*acks)


async def wait_processed(bootstrap: str, timeout: float) -> None:
    """Until the worker group's committed offsets reach the end of cerebelum.commands."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    tps = [TopicPartition(DEFAULT_NAMES.commands, p) for p in range(PARTITIONS)]
    try:
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while True:
            committed = await admin.list_consumer_group_offsets(DEFAULT_NAMES.worker_group)
            behind = sum(
                max(0, ends[tp] - (committed[tp].offset if tp in committed else 0)) for tp in tps
            )
            if behind == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{behind} start-commands not processed within {timeout}s")
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()
        await admin.close()


class ProbeWatch:
    """Follows cerebelum.events from its current end; notes when each probe's first event lands."""

    def __init__(self, bootstrap: str, probes: dict[int, str]) -> None:
        self.bootstrap = bootstrap
        self.probe_keys = {eid.encode(): p for p, eid in probes.items()}
        self.first: dict[int, float] = {}
        self.first_at: dict[int, float] = {}  # the event's own `at` (when the worker decided it)
        self.consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            # The arrival time is the measurement: poll often.
            fetch_max_wait_ms=10,
        )
        await self.consumer.start()
        tps = [TopicPartition(DEFAULT_NAMES.events, p) for p in range(PARTITIONS)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the lazy seek before the kill
            await self.consumer.position(tp)
        self.task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        assert self.consumer is not None
        while True:
            batches = await self.consumer.getmany(timeout_ms=20)
            now = time.time()
            for records in batches.values():
                for r in records:
                    p = self.probe_keys.get(r.key)
                    if p is not None and p not in self.first:
                        self.first[p] = now
                        self.first_at[p] = orjson.loads(r.value)["at"] / 1000

    async def wait(self, partitions: frozenset[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not partitions <= set(self.first) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.consumer is not None:
            await self.consumer.stop()


# -- one run ---------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "max": round(max(values), 3),
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
    }


async def one_run(
    args: argparse.Namespace, size: int, session_ms: int, index: int
) -> dict[str, Any]:
    heartbeat_ms = min(3_000, session_ms // 3)  # Kafka's advice: a third of the session timeout
    tag = f"s{session_ms}-n{size}-r{index}-{uuid.uuid4().hex[:6]}"
    log(f"run {tag}: fresh topics")
    await fresh_topics(args.bootstrap)
    env = dict(os.environ)
    env.update(
        CEREBELUM_KAFKA=args.bootstrap,
        CEREBELUM_SESSION_TIMEOUT_MS=str(session_ms),
        CEREBELUM_HEARTBEAT_INTERVAL_MS=str(heartbeat_ms),
        PYTHONPATH=str(REPO),
    )
    args.log_dir.mkdir(parents=True, exist_ok=True)
    workers = [WorkerProcess(f"{tag}-w{i}", args.log_dir, env) for i in range(2)]
    try:
        owned = await wait_settled(workers)
        victim, survivor = workers
        victim_parts, survivor_parts = owned

        # Park: N on the victim's partitions (and N on the survivor's with --layout even).
        ids = ids_on(victim_parts, size, f"park-{tag}-v")
        if args.layout == "even":
            ids += ids_on(survivor_parts, size, f"park-{tag}-s")
        log(f"run {tag}: parking {len(ids)} executions")
        producer = await start_producer(args.bootstrap)
        t0 = time.monotonic()
        await produce_starts(producer, ids)
        produced_s = time.monotonic() - t0
        await wait_processed(args.bootstrap, timeout=900)
        park_s = time.monotonic() - t0
        log(f"run {tag}: parked in {park_s:.1f}s (produced in {produced_s:.1f}s)")

        # Restore throughput, all 64 partitions, workers idle.
        restore_runs = []
        settings = Settings(kafka_bootstrap=args.bootstrap)
        for _ in range(args.restore_runs):
            t = time.monotonic()
            states = await asyncio.to_thread(
                restore_partitions,
                restore_config(settings, "failover-bench"),
                list(range(PARTITIONS)),
                settings.names.state,
            )
            seconds = time.monotonic() - t
            # A dict of executions per partition, or (lazy restore) an object holding one.
            count = sum(len(getattr(s, "executions", s)) for s in states.values())
            restore_runs.append((seconds, count))
        restored = restore_runs[0][1]
        restore_s = statistics.median(r[0] for r in restore_runs)

        # Kill, probe, watch.
        probes = probe_ids(f"probe-{tag}")
        watch = ProbeWatch(args.bootstrap, probes)
        await watch.start()
        load_before = os.getloadavg()[0]
        await asyncio.sleep(args.settle_s)  # the victim heartbeats at a random phase anyway
        victim.proc.kill()
        killed = time.time()
        victim.proc.wait()
        await produce_starts(producer, list(probes.values()))
        probes_acked = time.time() - killed
        await producer.stop()
        await watch.wait(victim_parts, RESUME_TIMEOUT_S)
        await asyncio.sleep(0.5)  # a little longer, for the survivor's own partitions' probes
        await watch.stop()
        load_after = os.getloadavg()[0]

        resume = {p: watch.first[p] - killed for p in victim_parts if p in watch.first}
        decided = {p: watch.first_at[p] - killed for p in victim_parts if p in watch.first_at}
        after = [(t, kind, parts) for t, kind, parts in survivor.ownership() if t >= killed - 0.5]
        revoked = next((t for t, kind, _ in after if kind == "revoked"), None)
        assigned = next((t for t, kind, _ in after if kind == "assigned"), None)
        owning = next((t for t, kind, _ in after if kind == "owning"), None)
        restore_in_worker = next((r for r in survivor.restores() if r["at"] >= killed - 0.5), None)

        def since_kill(t: float | None) -> float | None:
            return None if t is None else round(t - killed, 3)

        result = {
            "tag": tag,
            "session_timeout_ms": session_ms,
            "heartbeat_interval_ms": heartbeat_ms,
            "layout": args.layout,
            "live_on_victim_partitions": size,
            "live_total": len(ids),
            "victim_partitions": len(victim_parts),
            "park_s": round(park_s, 2),
            "park_produce_s": round(produced_s, 2),
            "park_per_s": round(len(ids) / park_s),
            "restore_bench": {
                "partitions": PARTITIONS,
                "executions": restored,
                "seconds_runs": [round(r[0], 3) for r in restore_runs],
                "executions_per_s": round(restored / restore_s) if restore_s else None,
            },
            "probes_acked_s": round(probes_acked, 3),
            # Per victim partition: the kill to its probe's first committed event (arrival at
            # a read_committed consumer) and to the event's own `at` (when it was decided).
            "resume_s": summary(list(resume.values())),
            "resume_decided_s": summary(list(decided.values())),
            "partitions_never_resumed": sorted(victim_parts - set(resume)),
            # From the survivor's log, seconds after the kill.
            "survivor": {
                # It saw the rebalance (detection). Under KIP-848 a survivor keeps its own
                # partitions (no revocation): detection is then the assignment of new ones.
                "revoked_s": since_kill(revoked),
                "assigned_s": since_kill(assigned),  # the rebalance completed
                "owning_s": since_kill(owning),  # producers started, restore done
                "restore": restore_in_worker,
                "restore_per_s": (
                    round(restore_in_worker["executions"] / restore_in_worker["seconds"])
                    if restore_in_worker and restore_in_worker["seconds"]
                    else None
                ),
            },
            # The target's "detection plus restore": the kill to owning the partitions again.
            "detection_plus_restore_s": since_kill(owning),
            "load_average_1m": {"before": round(load_before, 2), "after": round(load_after, 2)},
        }
        if restore_in_worker is not None:
            result["survivor"]["restore"] = {
                k: (round(v - killed, 3) if k == "at" else v) for k, v in restore_in_worker.items()
            }
        log(
            f"run {tag}: resume max {result['resume_s'] and result['resume_s']['max']}s, "
            f"owning at {result['detection_plus_restore_s']}s"
        )
        return result
    finally:
        for w in workers:
            w.stop()


# -- the suite -------------------------------------------------------------------------------


def med(values: list[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return round(statistics.median(vs), 3) if vs else None


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["session_timeout_ms"], r["live_on_victim_partitions"]), []).append(r)
    out = []
    for (session_ms, size), rs in sorted(groups.items()):
        out.append(
            {
                "session_timeout_ms": session_ms,
                "live_on_victim_partitions": size,
                "live_total": rs[0]["live_total"],
                "runs": len(rs),
                "resume_max_s": med([r["resume_s"] and r["resume_s"]["max"] for r in rs]),
                "resume_median_s": med([r["resume_s"] and r["resume_s"]["median"] for r in rs]),
                "resume_max_s_all_runs": [r["resume_s"] and r["resume_s"]["max"] for r in rs],
                "detected_s": med(
                    [r["survivor"]["revoked_s"] or r["survivor"]["assigned_s"] for r in rs]
                ),
                "rebalanced_s": med([r["survivor"]["assigned_s"] for r in rs]),
                "detection_plus_restore_s": med([r["detection_plus_restore_s"] for r in rs]),
                "restore_in_worker_s": med(
                    [(r["survivor"]["restore"] or {}).get("seconds") for r in rs]
                ),
                "restore_bench_executions": rs[0]["restore_bench"]["executions"],
                "restore_bench_per_s": med([r["restore_bench"]["executions_per_s"] for r in rs]),
                "never_resumed": sum(len(r["partitions_never_resumed"]) for r in rs),
            }
        )
    return out


def code_fingerprint() -> str:
    """What code was measured: a hash of cerebelum/ and of this benchmark's sources."""
    digest = hashlib.sha256()
    for path in sorted([*(REPO / "cerebelum").rglob("*.py"), *HERE.glob("*.py")]):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "note": "shared and noisy: other engineers' tests and benchmarks run on the same box",
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    started = datetime.now()
    code_before = code_fingerprint()
    for session_ms in args.session_timeouts:
        for size in args.sizes:
            for i in range(args.runs):
                runs.append(await one_run(args, size, session_ms, i))
    return {
        "benchmark": "failover",
        "started": started.isoformat(timespec="seconds"),
        "bootstrap": args.bootstrap,
        "machine": machine(),
        "repo": str(REPO),
        "code": code_before,
        # Other engineers edit the same tree: a run whose workers did not all run one code
        # version is not comparable with itself.
        "code_changed_during_run": code_fingerprint() != code_before,
        "settings": {
            "sizes": args.sizes,
            "session_timeouts_ms": args.session_timeouts,
            "runs": args.runs,
            "layout": args.layout,
            "restore_runs": args.restore_runs,
        },
        "summary": summarise(runs),
        "runs": runs,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap", required=True, help="a PRIVATE broker: topics are deleted")
    p.add_argument(
        "--sizes", default="1000,10000,50000", help="live executions on the victim's partitions"
    )
    p.add_argument(
        "--session-timeouts", default="10000,3000", help="ms; heartbeats at a third, at most 3 s"
    )
    p.add_argument(
        "--runs", type=int, default=3, help="runs per (session timeout, size); medians reported"
    )
    p.add_argument(
        "--layout",
        choices=("even", "victim"),
        default="even",
        help="even: N on each worker's partitions; victim: N on the victim's only",
    )
    p.add_argument("--restore-runs", type=int, default=3, help="timed restores per run")
    p.add_argument("--settle-s", type=float, default=1.0, help="pause between parking and the kill")
    p.add_argument("--log-dir", type=Path, default=Path("/tmp/cerebelum-failover-bench/logs"))
    p.add_argument("--out", type=Path, help="results JSON (default results/failover-<stamp>.json)")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.session_timeouts = [int(s) for s in args.session_timeouts.split(",")]
    if args.bootstrap.rsplit(":", 1)[-1] in SHARED_BROKER_PORTS:
        p.error(f"{args.bootstrap} is the shared broker; this benchmark deletes topics")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(main_async(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / f"failover-{stamp}.json"
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    log(f"results: {out}")
    if not args.no_plot:
        from bench.failover.plot import plot

        png = plot(report, out.with_suffix(".png"))
        log(f"plot: {png}")
    return 0
