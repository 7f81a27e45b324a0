"""Mirror: events per second the mirror writes into PostgreSQL from a pre-filled events topic.

    python -m bench.mirror [--executions 50000] [--repeat 3] [--writers 2] [--reuse]

1. Unless --reuse: fill cerebelum.events with real W3 events: the throughput benchmark's run
   without a mirror (fresh topics, one worker, --executions executions, 8 events each).
2. Read the topic once: how many events it holds and each partition's last record offset.
3. For each repetition: truncate `events` and `executions`, start `cerebelum mirror` with a
   fresh consumer group (so it reads the whole topic), and poll the group's committed offsets
   (committed only after the PostgreSQL commit) until every partition is past its last record;
   then check the row counts.
Events/s is counted from the mirror's "assigned partitions" log line (when it starts fetching)
to the last offset commit; the time from process spawn is reported beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import asyncpg

from bench import common, throughput
from bench.common import Cluster, CpuMeter, GroupOffsets, say
from cerebelum.config import Settings
from cerebelum.constants import DEFAULT_NAMES

# A mirror slower than 1,000 events/s on a million events is broken; stop waiting then.
MIRROR_TIMEOUT_S = 1000.0


async def mirror_once(
    s: Settings, scan: common.EventScan, executions: int, writers: int | None, index: int
) -> dict[str, Any]:
    run = common.run_id(f"mirror-{index}")
    await common.truncate_tables(s)
    group = f"bench-{run}"
    cluster = Cluster(s, run)
    try:
        targets = {p: o + 1 for p, o in scan.last_data_offset.items()}
        meter = CpuMeter(common.service_processes(s))
        meter.start()
        proc = cluster.start_mirror(group=group, writers=writers)
        meter.add_new(common.Tracked("mirror", proc.pid))
        timeline: list[tuple[float, int]] = []
        async with GroupOffsets(s, group, DEFAULT_NAMES.events) as offsets:
            deadline = time.monotonic() + MIRROR_TIMEOUT_S
            while True:
                try:
                    committed = await offsets.committed()
                except Exception:  # the group does not exist until the mirror joins it
                    committed = {}
                now = time.monotonic()
                timeline.append((now, sum(committed.values())))
                if all(committed.get(p, 0) >= o for p, o in targets.items()):
                    break
                if now > deadline:
                    raise TimeoutError(
                        f"mirror not done after {MIRROR_TIMEOUT_S}s; see {cluster.logs}"
                    )
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"mirror exited; see {proc.log}")
                await asyncio.sleep(common.POLL_S)
        meter.stop()
        t_done = timeline[-1][0]
        t_assigned = cluster.wait_mirror_ready(timeout=5)
        conn = await asyncpg.connect(s.database_url)
        try:
            rows = await conn.fetchval("SELECT count(*) FROM events")
            completed = await common.count_completed(conn)
        finally:
            await conn.close()
        seconds = t_done - t_assigned
        cpu = meter.report()
        per_1000 = {k: round(v * 1000 / scan.records, 4) for k, v in cpu["cpu_s"].items()}
        say(f"mirror: {scan.records} events in {seconds:.2f} s = {scan.records / seconds:.0f}/s")
        return {
            "run": run,
            "events": scan.records,
            "seconds": round(seconds, 3),
            "events_per_s": round(scan.records / seconds),
            "spawn_to_done_s": round(t_done - proc.spawned_at, 3),
            "events_per_s_from_spawn": round(scan.records / (t_done - proc.spawned_at)),
            "rows_in_events": rows,
            "completed_executions": completed,
            "rows_match": rows == scan.records and completed == executions,
            "cpu": cpu,
            "cpu_s_per_1000_events": per_1000,
            "timeline": [
                [round(t - t_assigned, 3), c] for t, c in timeline if t >= t_assigned - 0.5
            ],
            "logs": str(cluster.logs.relative_to(common.ROOT)),
        }
    finally:
        cluster.close()


def plot(runs: list[dict[str, Any]], path: str) -> None:
    with common.plotting() as plt:
        if plt is None:
            return
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for k, r in enumerate(runs):
            tl = r["timeline"]
            ax.plot([p[0] for p in tl], [p[1] for p in tl],
                    label=f"run {k + 1}: {r['events_per_s']:,} events/s")  # fmt: skip
        if runs:
            total = runs[0]["events"]
            ax.plot([0, total / 50_000], [0, total], "r:", label="target pace 50,000/s")
        ax.set_xlabel("seconds since the mirror was assigned its partitions")
        ax.set_ylabel("offsets committed (events + transaction markers)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.suptitle("Mirror catching up on a pre-filled cerebelum.events")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        say(f"wrote {path}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--executions", type=int, default=50_000, help="W3 executions to pre-fill")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--writers", type=int, help="the mirror's --writers (default: its own)")
    p.add_argument("--reuse", action="store_true", help="keep the events topic as it is")
    return p


async def main(args: argparse.Namespace) -> None:
    s = common.settings()
    await common.prepare(s)
    prefill = None
    if not args.reuse:
        say(f"pre-filling cerebelum.events: {args.executions} W3 executions, no mirror")
        prefill = await throughput.run_once(
            s, args.executions, mirror=False, warmup=0, label="mirror-prefill"
        )
        prefill.pop("timeline", None)
    scan = await common.scan_events(s, {})
    executions = scan.completed
    say(f"cerebelum.events holds {scan.records} events of {executions} completed executions")
    if not scan.records:
        raise SystemExit("cerebelum.events is empty: run without --reuse")
    runs = [await mirror_once(s, scan, executions, args.writers, i) for i in range(args.repeat)]
    doc = {
        "params": vars(args),
        "summary": {
            "events_per_s": common.spread([r["events_per_s"] for r in runs]),
            "events_per_s_from_spawn": common.spread([r["events_per_s_from_spawn"] for r in runs]),
            "all_rows_match": all(r["rows_match"] for r in runs),
        },
        "prefill": prefill,
        "runs": runs,
    }
    path = common.write_result("mirror", doc)
    plot(runs, str(path.with_suffix(".png")))


if __name__ == "__main__":
    asyncio.run(main(parser().parse_args()))
