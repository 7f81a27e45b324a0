"""Throughput: N W3 start-commands produced at once; executions per second end to end.

    python -m bench.throughput --n 20000 [--workers 1] [--repeat 3] [--profile py-spy]

Each repetition, in order:
    1. recreate Cerebelum's topics and truncate the tables (a run starts from empty logs);
    2. start the mirror and the workers; wait until they own all 64 partitions;
    3. warm up with --warmup executions (threads, connections, caches), wait until mirrored;
    4. read every process's CPU (/proc/PID/stat utime+stime), then let the load generator
       (its own process) produce the N start-commands in batches, as fast as Kafka takes them;
    5. poll PostgreSQL's completed count and the events topic's last stable offsets every 50 ms,
       until all N executions are `completed` in PostgreSQL; read the CPU again;
    6. check what Kafka holds: N ExecutionCompleted events, outputs right, none failed.

Reported: executions/s from the first start to the last `completed` row in PostgreSQL, and to the
last ExecutionCompleted committed in Kafka (when the events topic's last stable offset reached
its final value; also by the record's own timestamp); CPU-seconds per 1,000 executions of the
broker, PostgreSQL (postmaster and all backends), each worker, the mirror, the load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from typing import Any

from bench import common
from bench.common import Cluster, CpuMeter, LoadGen, say
from bench.profiles import PySpy, hot_spots, pyinstrument_wrapper
from cerebelum.config import Settings

# Stop waiting for a run after this long: at the 20 executions/s of the slowest engine compared
# (Temporal's dev server) 20,000 would take 1,000 s; anything slower than that is broken.
RUN_TIMEOUT_S = 1200.0
# The LSO must stay put this long (with nothing left to start) before a run without a mirror
# counts as finished in Kafka; a W3 execution's steps are sub-millisecond, so 1 s is ample.
KAFKA_QUIET_S = 1.0


async def run_once(
    s: Settings,
    n: int,
    *,
    workers: int = 1,
    mirror: bool = True,
    warmup: int = 500,
    reset: bool = True,
    profile: str | None = None,
    gc_probe: bool = False,
    label: str = "throughput",
) -> dict[str, Any]:
    run = common.run_id(label)
    await common.prepare(s)
    if reset:
        say("recreating topics, truncating tables")
        await common.reset_topics(s)
        await common.truncate_tables(s)
    cluster = Cluster(s, run)
    spy: PySpy | None = None
    profile_file = None
    gc_report = cluster.logs / "worker-0-gc.json"
    worker_cpu_at_stop = None
    try:
        if mirror:
            cluster.start_mirror()
        for i in range(workers):
            wrapper = None
            if profile == "pyinstrument" and i == 0:
                profile_file = common.PROFILES / f"{run}-worker-pyinstrument.speedscope.json"
                wrapper = pyinstrument_wrapper(profile_file)
            env = {}
            if gc_probe and i == 0:  # bench/diag/sitecustomize.py records GC pauses
                env = {"PYTHONPATH": common.DIAG_PYTHONPATH, "BENCH_GC_REPORT": str(gc_report)}
            cluster.start_worker(wrapper, **env)
        cluster.wait_workers_ready()
        if mirror:
            cluster.wait_mirror_ready()
        say(f"{workers} worker(s) own all partitions" + (", mirror assigned" if mirror else ""))

        conn, probe_pid = await common.pg_connect(s)
        if warmup:
            say(f"warm-up: {warmup} executions")
            await _load(s, cluster, warmup, conn, mirror, wait=True)
        base_completed = await common.count_completed(conn)

        lso = common.offsets_consumer(s)
        await lso.start()
        tps = common.events_tps()
        start_offsets = {tp.partition: o for tp, o in (await lso.end_offsets(tps)).items()}

        prefix = secrets.token_hex(8)
        gen = LoadGen(s, n, "w3", prefix, cluster.logs)
        tracked = common.service_processes(s) + cluster.tracked()
        tracked.append(common.Tracked("loadgen", gen.pid))
        for t in tracked:
            if t.name == "postgres":
                t.exclude.add(probe_pid)
        meter = CpuMeter(tracked)
        meter.start()
        if profile == "py-spy":
            profile_file = common.PROFILES / f"{run}-worker-0.speedscope.json"
            spy = PySpy(cluster.workers[0].pid, profile_file)
        t_go = time.monotonic()
        gen.go()
        result_task = asyncio.create_task(gen.result())

        timeline: list[tuple[float, int, int]] = []  # (t, completed in PG, events LSO sum)
        deadline = t_go + RUN_TIMEOUT_S
        quiet_since: float | None = None
        done_at: float | None = None
        while time.monotonic() < deadline:
            now = time.monotonic()
            completed = (await common.count_completed(conn) - base_completed) if mirror else 0
            ends = await lso.end_offsets(tps)
            total = sum(ends.values())
            if timeline and total == timeline[-1][2] and total > sum(start_offsets.values()):
                quiet_since = quiet_since or timeline[-1][0]
            else:
                quiet_since = None
            timeline.append((now, completed, total))
            if mirror and completed >= n:
                done_at = now
                break
            if (
                not mirror
                and result_task.done()
                and quiet_since
                and now - quiet_since >= KAFKA_QUIET_S
            ):
                scan = await common.scan_events(s, start_offsets)
                if scan.completed + scan.failed >= n:
                    done_at = quiet_since
                    break
                quiet_since = None
            await asyncio.sleep(common.POLL_S)
        meter.stop()
        if spy is not None:
            spy.stop()
        if done_at is None:
            raise TimeoutError(f"not all {n} executions completed within {RUN_TIMEOUT_S}s")
        produced = await result_task
        final_lso = sum((await lso.end_offsets(tps)).values())
        await lso.stop()
        cpu = meter.report(n)
        gen.close()

        t0 = produced["t_first"]
        kafka_done = next((t for t, _, total in timeline if total >= final_lso), done_at)
        scan = await common.scan_events(s, start_offsets, check=_check_w3, count_types=True)
        await conn.close()
        say(
            f"{n} executions: "
            + (f"PostgreSQL {n / (done_at - t0):.0f}/s, " if mirror else "")
            + f"Kafka {n / (kafka_done - t0):.0f}/s, {cpu['cpu_s_per_1000_total']} CPU-s/1000"
        )
        result: dict[str, Any] = {
            "run": run,
            "n": n,
            "workers": workers,
            "mirror": mirror,
            "warmup": warmup,
            "produce": {
                "seconds": round(produced["t_acked"] - t0, 3),
                "per_s": round(n / max(produced["t_acked"] - t0, 1e-9)),
                "cpu_s": round(produced["cpu_s"], 3),
            },
            "kafka": {
                "seconds": round(kafka_done - t0, 3),
                "executions_per_s": round(n / (kafka_done - t0), 1),
                "by_record_timestamp_s": (
                    round(scan.last_completed_ts - t0, 3) if scan.last_completed_ts else None
                ),
            },
            "check": {
                "completed_events": scan.completed,
                "failed_events": scan.failed,
                "outputs_checked": scan.outputs_checked,
                "wrong_outputs": scan.wrong_outputs,
                "events_by_type": scan.by_type,
                "events_per_execution": round(scan.records / n, 2),
            },
            "cpu": cpu,
            "timeline": [
                [round(t - t0, 3), c, total - sum(start_offsets.values())]
                for t, c, total in _thin(timeline, 0.25)
            ],
            "logs": str(cluster.logs.relative_to(common.ROOT)),
        }
        if mirror:
            result["postgres"] = {
                "seconds": round(done_at - t0, 3),
                "executions_per_s": round(n / (done_at - t0), 1),
            }
        if profile_file is not None:
            result["profile_file"] = str(profile_file.relative_to(common.ROOT))
        if gc_probe:
            worker_cpu_at_stop = common.cpu_seconds(cluster.workers[0].pid)
        return result
    finally:
        if spy is not None:
            spy.stop()
        cluster.close()
        if gc_probe and gc_report.exists() and worker_cpu_at_stop is not None:
            gc_stats = json.loads(gc_report.read_text())
            gc_stats["worker_cpu_s_whole_life"] = round(worker_cpu_at_stop, 2)
            gc_stats["gc_share_of_worker_cpu"] = round(
                sum(gc_stats["seconds"]) / max(worker_cpu_at_stop, 1e-9), 3
            )
            result["gc"] = gc_stats
            say(f"worker GC: {gc_stats}")
        if profile == "pyinstrument" and profile_file is not None and profile_file.exists():
            say(f"pyinstrument wrote {profile_file}")


async def _load(s: Settings, cluster: Cluster, n: int, conn: Any, mirror: bool, wait: bool) -> None:
    """Start n W3 executions (warm-up) and wait until they are all completed."""
    before = await common.count_completed(conn) if mirror else 0
    gen = LoadGen(s, n, "w3", secrets.token_hex(8), cluster.logs)
    gen.go()
    await gen.result()
    gen.close()
    deadline = time.monotonic() + 300
    while wait:
        if mirror:
            if await common.count_completed(conn) - before >= n:
                return
        elif await common.worker_lag(s) == 0:
            await asyncio.sleep(2.0)  # the steps after the start-commands: sub-ms each
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"warm-up: {n} executions not completed in 300 s; see {cluster.logs}"
            )
        await asyncio.sleep(0.2)


def _check_w3(event: dict[str, Any]) -> bool:
    """W3's output for inputs {"n": i} is {"n": (i + 1) * 2}; i is in the execution id's tail."""
    i = int(event["execution_id"][16:], 16)
    return event.get("output") == {"n": (i + 1) * 2}


def _thin(timeline: list[tuple[float, int, int]], every: float) -> list[tuple[float, int, int]]:
    out: list[tuple[float, int, int]] = []
    for point in timeline:
        if not out or point[0] - out[-1][0] >= every:
            out.append(point)
    if timeline and out[-1] is not timeline[-1]:
        out.append(timeline[-1])
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repetitions, and how far apart the repetitions were."""
    summary: dict[str, Any] = {
        "kafka_executions_per_s": common.spread([r["kafka"]["executions_per_s"] for r in runs]),
        "cpu_s_per_1000_total": common.spread([r["cpu"]["cpu_s_per_1000_total"] for r in runs]),
        "other_programs_cpu_s": common.spread([r["cpu"]["other_programs_cpu_s"] for r in runs]),
    }
    if all("postgres" in r for r in runs):
        summary["postgres_executions_per_s"] = common.spread(
            [r["postgres"]["executions_per_s"] for r in runs]
        )
    names = sorted({k for r in runs for k in r["cpu"]["cpu_s_per_1000"]})
    summary["cpu_s_per_1000_by_process"] = {
        k: round(common.median([r["cpu"]["cpu_s_per_1000"].get(k, 0.0) for r in runs]), 4)
        for k in names
    }
    return summary


def plot(runs: list[dict[str, Any]], path: str, title: str) -> None:
    with common.plotting() as plt:
        if plt is None:
            return
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        for r in runs:
            tl = r["timeline"]
            ts = [p[0] for p in tl]
            final_lso = max(p[2] for p in tl) or 1
            label = f"{r['workers']}w {r['run'][-6:]}"
            if r["mirror"]:
                ax1.plot(ts, [p[1] for p in tl], label=f"PostgreSQL completed ({label})")
            ax1.plot(ts, [p[2] / final_lso * r["n"] for p in tl], "--",
                     label=f"Kafka events committed, scaled ({label})")  # fmt: skip
            rates = [
                (b[0], (b[2] - a[2]) / (b[0] - a[0]))
                for a, b in zip(tl, tl[1:], strict=False)
                if b[0] > a[0]
            ]
            ax2.plot([x for x, _ in rates], [y for _, y in rates], label=label)
        ax1.set_xlabel("seconds since the first start-command")
        ax1.set_ylabel("executions")
        ax1.legend(fontsize=7)
        ax1.grid(alpha=0.3)
        ax2.axhline(
            8 * 2500, color="red", linestyle=":", label="target pace (2,500 W3/s x 8 events)"
        )
        ax2.set_xlabel("seconds since the first start-command")
        ax2.set_ylabel("Kafka offsets committed per second (events + txn markers)")
        ax2.legend(fontsize=7)
        ax2.grid(alpha=0.3)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        say(f"wrote {path}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="executions to start (default 20000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--repeat", type=int, default=1, help="runs; the median is reported")
    p.add_argument("--warmup", type=int, default=500, help="executions before measuring")
    p.add_argument("--no-mirror", action="store_true", help="no mirror: time Kafka only")
    p.add_argument("--no-reset", action="store_true", help="keep topics and tables as they are")
    p.add_argument("--profile", choices=["py-spy", "pyinstrument"], help="profile worker 0")
    p.add_argument(
        "--gc-probe", action="store_true", help="record worker 0's garbage-collector pauses"
    )
    return p


async def main(args: argparse.Namespace) -> None:
    s = common.settings()
    runs = []
    for i in range(args.repeat):
        say(f"run {i + 1}/{args.repeat}: {args.n} W3 executions, {args.workers} worker(s)")
        runs.append(
            await run_once(
                s,
                args.n,
                workers=args.workers,
                mirror=not args.no_mirror,
                warmup=args.warmup,
                reset=not args.no_reset,
                profile=args.profile,
                gc_probe=args.gc_probe,
            )
        )
    doc: dict[str, Any] = {"params": vars(args), "summary": summarise(runs), "runs": runs}
    for r in runs:
        if "profile_file" in r:
            r["hot_spots"] = hot_spots(common.ROOT / r["profile_file"])
    name = "throughput-profiled" if args.profile or args.gc_probe else "throughput"
    path = common.write_result(name, doc)
    plot(
        runs, str(path.with_suffix(".png")), f"W3 throughput, N={args.n}, {args.workers} worker(s)"
    )


if __name__ == "__main__":
    asyncio.run(main(parser().parse_args()))
