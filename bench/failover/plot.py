"""Draw a failover results JSON: resume time against live executions, and restore throughput.

.venv/bin/python -m bench.failover.plot bench/failover/results/failover-<stamp>.json
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import orjson


def plot(report: dict[str, Any], png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on the bench machine
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.6))
    _resume(left, report)
    _restore(right, report)
    m = report["machine"]
    fig.suptitle(
        f"Cerebelum failover bench, {report['started']}, {m['cores']} cores (shared, noisy); "
        f"medians of {report['settings']['runs']} runs",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def _resume(ax: Any, report: dict[str, Any]) -> None:
    by_session: dict[int, list[dict[str, Any]]] = {}
    for row in report["summary"]:
        by_session.setdefault(row["session_timeout_ms"], []).append(row)
    for session_ms, rows in sorted(by_session.items(), reverse=True):
        rows.sort(key=lambda r: r["live_on_victim_partitions"])
        xs = [r["live_on_victim_partitions"] for r in rows]
        label = f"session {session_ms / 1000:g} s"
        ys = [r["resume_max_s"] for r in rows]
        runs = [[v for v in r["resume_max_s_all_runs"] if v is not None] for r in rows]
        lows = [y - min(vs) for y, vs in zip(ys, runs, strict=True)]
        highs = [max(vs) - y for y, vs in zip(ys, runs, strict=True)]
        line = ax.errorbar(
            xs, ys, yerr=[lows, highs], marker="o", capsize=4,
            label=f"{label}: resume, slowest partition (bars: min-max of runs)",
        )  # fmt: skip
        color = line[0].get_color()
        ax.plot(
            xs, [r["detection_plus_restore_s"] for r in rows], ls="--", marker="x", color=color,
            label=f"{label}: survivor owns the partitions again (detection + restore)",
        )  # fmt: skip
        ax.plot(
            xs, [r["detected_s"] for r in rows], ls=":", marker=".", color=color,
            label=f"{label}: survivor sees the rebalance (detection)",
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_ylim(0, max(12.5, ax.get_ylim()[1]))
    along = ax.get_yaxis_transform()  # x in axes fraction, y in data
    ax.axhline(10, color="grey", lw=0.8)
    ax.text(0.01, 10.15, "target: resume within 10 s at 10,000", transform=along, fontsize=7)
    ax.axhline(5, color="grey", lw=0.8, ls="--")
    ax.text(0.01, 5.15, "target: detection + restore < 5 s (short timeout)", transform=along,
            fontsize=7)  # fmt: skip
    ax.set_xlabel(
        "live executions on the killed worker's partitions (as many again on the other's)"
    )
    ax.set_ylabel("seconds after kill -9")
    ax.set_title("kill -9 to the first new event on each of its partitions", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1)


def _restore(ax: Any, report: dict[str, Any]) -> None:
    bench: dict[int, list[float]] = {}
    worker: dict[int, list[float]] = {}
    for run in report["runs"]:
        rb = run["restore_bench"]
        if rb["executions_per_s"]:
            bench.setdefault(rb["executions"], []).append(rb["executions_per_s"])
        rate = run["survivor"]["restore_per_s"]
        restore = run["survivor"]["restore"]
        if rate and restore:
            worker.setdefault(restore["executions"], []).append(rate)
    for series, label, marker in (
        (bench, "restore_partitions, all 64 partitions, workers idle", "o"),
        (worker, "the survivor's own restore during the failover (its log)", "s"),
    ):
        sizes = sorted(series)
        medians = [statistics.median(series[s]) for s in sizes]
        (line,) = ax.plot(sizes, medians, marker=marker, label=label)
        for size in sizes:
            ax.scatter(
                [size] * len(series[size]), series[size], marker=marker, alpha=0.35, s=14,
                color=line.get_color(),
            )  # fmt: skip
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.axhline(20_000, color="grey", lw=0.8, ls="--")
    ax.text(0.01, 21_000, "target: 100,000 restored in < 5 s", transform=ax.get_yaxis_transform(),
            fontsize=7)  # fmt: skip
    ax.set_xlabel("executions in cerebelum.state")
    ax.set_ylabel("executions restored per second (dots: runs; line: median)")
    ax.set_title("Restore throughput", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13))


if __name__ == "__main__":
    source = Path(sys.argv[1])
    print(plot(orjson.loads(source.read_bytes()), source.with_suffix(".png")))
