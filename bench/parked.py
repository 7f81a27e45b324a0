"""Parked executions: memory per sleeping execution in one worker, and how fast they restore.

    python -m bench.parked --m 100000 --m 300000 [--restores 3]

For each M, in order:
    1. recreate the topics (no mirror: parking costs the mirror nothing the throughput benchmark
       does not already measure); start one worker; once it owns all partitions and has idled
       2 s, read its RSS (VmRSS in /proc/PID/status): the idle baseline;
    2. produce M start-commands of `parked` (bench/app.py: an hour's durable sleep as its first
       node: ExecutionStarted + TimerStarted, then nothing); sample RSS and the worker group's
       committed offset every second until every start-command is decided and committed;
    3. after 3 s of quiet, RSS again: (RSS - idle RSS) / M is the memory per parked execution;
    4. --restores times: stop the worker (SIGTERM: it leaves the group), start a fresh one and
       time it from spawn to its "owning partitions 0-63" log line; the worker's own
       "restored ... in X s" line times restore_partitions alone. Then wait until it idles
       (re-arming every timer happens after the ownership line) and read its RSS.
With several M the per-execution figures are fitted linearly and extrapolated to 1,000,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import time
from typing import Any

from bench import common
from bench.common import Cluster, GroupOffsets, LoadGen, say
from cerebelum.config import Settings
from cerebelum.constants import DEFAULT_NAMES

# Parking 1,000,000 at the few thousand per second seen on 2 cores takes minutes; an hour
# means something is stuck.
FILL_TIMEOUT_S = 3600.0
# A worker counts as idle once it used less than this share of a core over IDLE_WINDOW_S. An
# idle worker itself polls Kafka (fetch_max_wait_ms=5) at ~0.1 core on this box; re-arming timers
# after a restore is CPU-bound at a full core, so 0.3 separates the two.
IDLE_CPU_SHARE = 0.3
IDLE_WINDOW_S = 1.0

RESTORED = re.compile(
    r"restored (\d+) partitions: (\d+) executions.*? from (\d+) records in ([\d.]+)s"
)


async def wait_idle(pid: int, timeout: float = 600.0) -> float:
    """The moment the process's CPU use fell below IDLE_CPU_SHARE for IDLE_WINDOW_S."""
    deadline = time.monotonic() + timeout
    last_t, last_cpu = time.monotonic(), common.cpu_seconds(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(IDLE_WINDOW_S)
        now, cpu = time.monotonic(), common.cpu_seconds(pid)
        if (cpu - last_cpu) / (now - last_t) < IDLE_CPU_SHARE:
            return last_t
        last_t, last_cpu = now, cpu
    raise TimeoutError(f"process {pid} still busy after {timeout}s")


async def fill(s: Settings, cluster: Cluster, m: int) -> dict[str, Any]:
    worker = cluster.workers[0]
    ends_before = sum((await common.topic_end(s, DEFAULT_NAMES.commands)).values())
    gen = LoadGen(s, m, "parked", secrets.token_hex(8), cluster.logs)
    cpu0 = common.cpu_seconds(worker.pid)
    t_go = time.monotonic()
    gen.go()
    produced_task = asyncio.create_task(gen.result())
    samples: list[list[float]] = []
    async with GroupOffsets(s, DEFAULT_NAMES.worker_group, DEFAULT_NAMES.commands) as group:
        deadline = t_go + FILL_TIMEOUT_S
        while True:
            committed = sum((await group.committed()).values())
            now = time.monotonic()
            samples.append(
                [round(now - t_go, 2), committed - ends_before, common.rss_bytes(worker.pid)]
            )
            if committed - ends_before >= m:
                break
            if now > deadline:
                raise TimeoutError(
                    f"{committed - ends_before} of {m} parked after {FILL_TIMEOUT_S}s"
                )
            await asyncio.sleep(1.0 if m > 20_000 else common.POLL_S)
    t_parked = time.monotonic()
    produced = await produced_task
    gen.close()
    cpu = common.cpu_seconds(worker.pid) - cpu0
    return {
        "seconds": round(t_parked - t_go, 2),
        "parked_per_s": round(m / (t_parked - t_go), 1),
        "produce_seconds": round(produced["t_acked"] - produced["t_first"], 2),
        "worker_cpu_s": round(cpu, 2),
        "worker_cpu_s_per_1000": round(cpu * 1000 / m, 3),
        "samples": samples,  # [seconds, parked, worker RSS bytes]
    }


async def restore(cluster: Cluster, worker_env: dict[str, str]) -> dict[str, Any]:
    old = cluster.workers.pop()
    stop_s = old.stop()
    worker = cluster.start_worker(**worker_env)
    spawned = worker.spawned_at
    line, match = worker.wait_for(r"owning partitions (\S+)", timeout=600)
    if common.parse_ranges(match.group(1)) != set(range(64)):
        raise RuntimeError(f"fresh worker owns only {match.group(1)}; see {worker.log}")
    owning = common.log_time(line) or time.monotonic()
    _, rm = worker.wait_for(RESTORED.pattern, timeout=10)
    started_line, _ = worker.wait_for(r"worker started", timeout=10)
    idle_at = await wait_idle(worker.pid)
    rss = common.rss_bytes(worker.pid)
    return {
        "old_worker_stop_s": round(stop_s, 2),
        "spawn_to_owning_s": round(owning - spawned, 3),
        "worker_started_to_owning_s": round(owning - (common.log_time(started_line) or spawned), 3),
        "restore_partitions_s": float(rm.group(4)),
        "restored_executions": int(rm.group(2)),
        "state_records_read": int(rm.group(3)),
        "spawn_to_idle_s": round(idle_at - spawned, 2),
        "rss_after_restore_bytes": rss,
    }


async def run_once(
    s: Settings,
    m: int,
    restores: int,
    worker_env: dict[str, str] | None = None,
    trace_memory: bool = False,
) -> dict[str, Any]:
    worker_env = worker_env or {}
    run = common.run_id(f"parked-{m}")
    await common.prepare(s)
    say("recreating topics, truncating tables")
    await common.reset_topics(s)
    await common.truncate_tables(s)
    cluster = Cluster(s, run)
    trace_file = cluster.logs / "worker-0-tracemalloc.json"
    try:
        fill_env = dict(worker_env)
        if trace_memory:  # bench/diag/sitecustomize.py: allocations by source line on SIGUSR1
            fill_env.update(
                PYTHONPATH=common.DIAG_PYTHONPATH, BENCH_TRACEMALLOC_REPORT=str(trace_file)
            )
        worker = cluster.start_worker(**fill_env)
        cluster.wait_workers_ready()
        await asyncio.sleep(2.0)
        idle = common.rss_bytes(worker.pid)
        say(f"idle worker RSS {idle / 2**20:.0f} MiB; parking {m} executions")
        filled = await fill(s, cluster, m)
        await asyncio.sleep(3.0)
        loaded = common.rss_bytes(worker.pid)
        per = (loaded - idle) / m
        say(f"{m} parked in {filled['seconds']} s; RSS {loaded / 2**20:.0f} MiB, {per:.0f} B each")
        memory_top = None
        if trace_memory:
            os.kill(worker.pid, signal.SIGUSR1)
            deadline = time.monotonic() + 120
            while not trace_file.exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)  # let the file be written in full
            memory_top = json.loads(trace_file.read_text())
        rounds = []
        for i in range(restores):
            r = await restore(cluster, worker_env)
            say(
                f"restore {i + 1}/{restores}: spawn->owning {r['spawn_to_owning_s']} s "
                f"(restore_partitions {r['restore_partitions_s']} s), "
                f"idle after {r['spawn_to_idle_s']} s, "
                f"RSS {r['rss_after_restore_bytes'] / 2**20:.0f} MiB"
            )
            rounds.append(r)
        return {
            "run": run,
            "m": m,
            "worker_env": worker_env,
            "idle_rss_bytes": idle,
            "parked_rss_bytes": loaded,
            "rss_per_execution_bytes": round(per, 1),
            "fill": filled,
            "tracemalloc": memory_top,
            "restores": rounds,
            "restore_median": {
                k: common.median([r[k] for r in rounds])
                for k in ("spawn_to_owning_s", "restore_partitions_s", "spawn_to_idle_s")
            },
            "rss_per_execution_after_restore_bytes": round(
                (common.median([r["rss_after_restore_bytes"] for r in rounds]) - idle) / m, 1
            ),
            "logs": str(cluster.logs.relative_to(common.ROOT)),
        }
    finally:
        cluster.close()


def extrapolate(runs: list[dict[str, Any]], target: int = 1_000_000) -> dict[str, Any]:
    """Least-squares lines through (M, figure), read at `target` (needs two or more M)."""
    ms = [r["m"] for r in runs]
    if len(set(ms)) < 2:
        only = runs[0]
        return {
            "method": f"proportional from M={only['m']} (one size measured)",
            "rss_bytes": only["idle_rss_bytes"] + only["rss_per_execution_bytes"] * target,
            "restore_partitions_s": only["restore_median"]["restore_partitions_s"]
            * target
            / only["m"],
            "spawn_to_owning_s": only["restore_median"]["spawn_to_owning_s"] * target / only["m"],
        }

    def fit(ys: list[float]) -> float:
        n = len(ms)
        mx, my = sum(ms) / n, sum(ys) / n
        slope = sum((x - mx) * (y - my) for x, y in zip(ms, ys, strict=True)) / sum(
            (x - mx) ** 2 for x in ms
        )
        return my + slope * (target - mx)

    return {
        "method": f"linear fit through M={sorted(set(ms))}, read at {target}",
        "rss_bytes": round(fit([r["parked_rss_bytes"] for r in runs])),
        "rss_after_restore_bytes": round(
            fit(
                [common.median([x["rss_after_restore_bytes"] for x in r["restores"]]) for r in runs]
            )
        ),
        "restore_partitions_s": round(
            fit([r["restore_median"]["restore_partitions_s"] for r in runs]), 2
        ),
        "spawn_to_owning_s": round(
            fit([r["restore_median"]["spawn_to_owning_s"] for r in runs]), 2
        ),
        "spawn_to_idle_s": round(fit([r["restore_median"]["spawn_to_idle_s"] for r in runs]), 2),
    }


def plot(runs: list[dict[str, Any]], path: str) -> None:
    with common.plotting() as plt:
        if plt is None:
            return
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        for r in runs:
            samples = r["fill"]["samples"]
            ax1.plot(
                [p[1] for p in samples], [p[2] / 2**20 for p in samples], label=f"M={r['m']:,}"
            )
        ax1.axhline(2048, color="red", linestyle=":", label="2 GB target (at 1,000,000)")
        ax1.set_xlabel("executions parked")
        ax1.set_ylabel("worker RSS, MiB")
        ax1.legend(fontsize=8)
        ax1.grid(alpha=0.3)
        ms = [r["m"] for r in runs]
        for key, label in (
            ("restore_partitions_s", "restore_partitions"),
            ("spawn_to_owning_s", "spawn to owning partitions"),
            ("spawn_to_idle_s", "spawn to idle (timers re-armed)"),
        ):
            ax2.plot(ms, [r["restore_median"][key] for r in runs], "o-", label=label)
        ax2.axhline(5, color="red", linestyle=":", label="5 s target (at 100,000)")
        ax2.set_xlabel("parked executions restored")
        ax2.set_ylabel("seconds (median of restores)")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)
        fig.suptitle("Parked executions: memory and restore time, one worker")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        say(f"wrote {path}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--m", type=int, action="append", help="executions to park; repeatable (default 100000)"
    )
    p.add_argument("--restores", type=int, default=3, help="restores per size (median reported)")
    p.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace the filling worker's allocations (slower) and report the top source lines",
    )
    p.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the workers (see bench/diag)")  # fmt: skip
    return p


async def main(args: argparse.Namespace) -> None:
    s = common.settings()
    worker_env = common.worker_env(args.worker_env)
    runs = [
        await run_once(s, m, args.restores, worker_env, args.tracemalloc)
        for m in (args.m or [100_000])
    ]
    doc = {
        "params": vars(args),
        "summary": {
            str(r["m"]): {
                "rss_per_execution_bytes": r["rss_per_execution_bytes"],
                "rss_per_execution_after_restore_bytes": r["rss_per_execution_after_restore_bytes"],
                "parked_rss_mib": round(r["parked_rss_bytes"] / 2**20, 1),
                "parked_per_s": r["fill"]["parked_per_s"],
                **r["restore_median"],
            }
            for r in runs
        },
        "extrapolated_1m": extrapolate(runs) if max(r["m"] for r in runs) < 1_000_000 else None,
        "runs": runs,
    }
    path = common.write_result("parked", doc)
    plot(runs, str(path.with_suffix(".png")))


if __name__ == "__main__":
    asyncio.run(main(parser().parse_args()))
