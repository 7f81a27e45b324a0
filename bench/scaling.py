"""Scaling: W3 throughput and CPU per execution with 1, 2 and 3 worker processes.

    python -m bench.scaling [--n 20000] [--workers 1 2 3] [--repeat 3]

Each point is bench.throughput's run (fresh topics, mirror on, warm-up, N start-commands at
once) with that many workers sharing the 64 partitions; the median of --repeat runs is reported.
On one 2-core box more workers add no cores: what this shows is the cost of splitting the
partitions (more processes, smaller transactions), not how the engine scales on more machines.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bench import common, throughput
from bench.common import say


def plot(points: list[dict[str, Any]], path: str) -> None:
    with common.plotting() as plt:
        if plt is None:
            return
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        ks = [p["workers"] for p in points]
        rates = [p["summary"].get("postgres_executions_per_s", {}).get("median", 0) for p in points]
        kafka = [p["summary"]["kafka_executions_per_s"]["median"] for p in points]
        width = 0.35
        ax1.bar([k - width / 2 for k in ks], rates, width, label="to PostgreSQL")
        ax1.bar([k + width / 2 for k in ks], kafka, width, label="to Kafka")
        ax1.axhline(2500, color="red", linestyle=":", label="target 2,500/s")
        ax1.set_xticks(ks)
        ax1.set_xlabel("worker processes")
        ax1.set_ylabel("W3 executions per second (median)")
        ax1.legend(fontsize=8)
        names = sorted({n for p in points for n in p["summary"]["cpu_s_per_1000_by_process"]})
        groups = {"workers": [n for n in names if n.startswith("worker")]}
        stacks: dict[str, list[float]] = {}
        for p in points:
            by = p["summary"]["cpu_s_per_1000_by_process"]
            for name in names:
                key = "workers" if name in groups["workers"] else name
                stacks.setdefault(key, [0.0] * len(points))
                stacks[key][points.index(p)] += by.get(name, 0.0)
        bottom = [0.0] * len(points)
        for key, values in stacks.items():
            ax2.bar(ks, values, 0.6, bottom=bottom, label=key)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax2.axhline(0.8, color="red", linestyle=":", label="target 0.8 CPU-s")
        ax2.set_xticks(ks)
        ax2.set_xlabel("worker processes")
        ax2.set_ylabel("CPU-seconds per 1,000 executions (median)")
        ax2.legend(fontsize=8)
        fig.suptitle("W3 throughput by number of workers (one 2-core box)")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        say(f"wrote {path}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--warmup", type=int, default=500)
    return p


async def main(args: argparse.Namespace) -> None:
    s = common.settings()
    points = []
    for k in args.workers:
        runs = []
        for i in range(args.repeat):
            say(f"{k} worker(s), run {i + 1}/{args.repeat}")
            run = await throughput.run_once(
                s, args.n, workers=k, warmup=args.warmup, label=f"scaling-{k}"
            )
            run.pop("timeline", None)
            runs.append(run)
        points.append({"workers": k, "summary": throughput.summarise(runs), "runs": runs})
    doc = {
        "params": vars(args),
        "summary": {
            str(p["workers"]): {
                "postgres_executions_per_s": p["summary"]
                .get("postgres_executions_per_s", {})
                .get("median"),
                "kafka_executions_per_s": p["summary"]["kafka_executions_per_s"]["median"],
                "cpu_s_per_1000_total": p["summary"]["cpu_s_per_1000_total"]["median"],
                "noise_range_pct": p["summary"]["kafka_executions_per_s"]["range_pct_of_median"],
            }
            for p in points
        },
        "points": points,
    }
    path = common.write_result("scaling", doc)
    plot(points, str(path.with_suffix(".png")))


if __name__ == "__main__":
    asyncio.run(main(parser().parse_args()))
