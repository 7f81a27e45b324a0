"""Medians over repeats, the side-by-side table, ratios to Restate, and the plot."""

from __future__ import annotations

from typing import Any

from bench.common.base import say
from bench.common.results import median, plotting, spread

HEADLINE_PERCENTILES = ("p50", "p99")


def _values(runs: list[dict[str, Any]], *path: str) -> list[float]:
    out = []
    for r in runs:
        node: Any = r
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, int | float):
            out.append(float(node))
    return out


def summarise_engine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One engine's repeats: the median (and range) of every headline figure."""
    s: dict[str, Any] = {"repeats": len(runs)}
    s["burst"] = {
        "executions_per_s": spread(_values(runs, "burst", "executions_per_s")),
        "cpu_s_per_1000_total": spread(_values(runs, "burst", "cpu", "cpu_s_per_1000_total")),
        "cpu_s_per_1000_until_settled": spread(
            _values(runs, "burst", "cpu_until_settled", "cpu_s_per_1000_total")
        ),
    }
    s["closed"] = {
        p: spread(_values(runs, "closed", "latency_ms", p)) for p in HEADLINE_PERCENTILES
    }
    s["closed"]["cpu_s_per_1000_total"] = spread(
        _values(runs, "closed", "cpu", "cpu_s_per_1000_total")
    )
    processes = sorted({k for r in runs for k in r["idle"]["cores"]})
    s["idle_cores"] = {
        "total": spread(_values(runs, "idle", "cores_total")),
        "by_process": {k: round(median(_values(runs, "idle", "cores", k)), 4) for k in processes},
    }
    rates = sorted({ph["rate_per_s"] for r in runs for ph in r["open"]})
    s["open"] = {}
    for rate in rates:
        phases = [ph for r in runs for ph in r["open"] if ph["rate_per_s"] == rate]
        ran = [ph for ph in phases if "skipped" not in ph]
        entry: dict[str, Any] = {"runs": len(ran), "skipped": len(phases) - len(ran)}
        if ran:
            entry.update(
                {p: spread([ph["latency_ms"][p] for ph in ran if p in ph["latency_ms"]])
                 for p in HEADLINE_PERCENTILES}
            )  # fmt: skip
            entry["cpu_s_per_1000_total"] = spread(
                [ph["cpu"]["cpu_s_per_1000_total"] for ph in ran]
            )
            entry["held"] = sum(1 for ph in ran if ph["held"])
            entry["lost"] = sum(ph["lost"] for ph in ran)
        s["open"][f"{rate:g}"] = entry
    held = [r["max_rate_held"]["rate_per_s"] for r in runs]
    s["max_rate_held_per_s"] = {
        **spread([float(h) for h in held if h is not None]),
        "runs_with_none_held": sum(1 for h in held if h is None),
    }
    s["other_programs_cores"] = spread([_noise(r) for r in runs])
    return s


def _noise(run: dict[str, Any]) -> float:
    """Other programs' CPU over every metered phase of a run, as cores: how busy the box was
    with work that was not this engine's (nor the harness's, nor the idle bystanders')."""
    phases = [run["idle"], run["closed"]["cpu"], run["burst"]["cpu"]]
    phases += [ph["cpu"] for ph in run["open"] + run["search"] if "cpu" in ph]
    wall = sum(ph["wall_s"] for ph in phases)
    return round(sum(ph["other_programs_cpu_s"] for ph in phases) / wall, 3) if wall else 0.0


def table(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per engine with the headline medians (what the issue's table shows)."""
    rows = []
    for name, s in summary.items():
        row: dict[str, Any] = {
            "engine": name,
            "burst_per_s": s["burst"]["executions_per_s"].get("median"),
            "burst_cpu_s_per_1000": s["burst"]["cpu_s_per_1000_total"].get("median"),
            "closed_p50_ms": s["closed"]["p50"].get("median"),
            "closed_p99_ms": s["closed"]["p99"].get("median"),
            "idle_cores": s["idle_cores"]["total"].get("median"),
            "max_rate_held_per_s": s["max_rate_held_per_s"].get("median"),
            "other_programs_cores": s["other_programs_cores"].get("median"),
        }
        for rate, entry in s["open"].items():
            if entry.get("runs"):
                row[f"open_{rate}_p50_p99_ms"] = [
                    entry.get("p50", {}).get("median"),
                    entry.get("p99", {}).get("median"),
                ]
                row[f"open_{rate}_cpu_s_per_1000"] = entry["cpu_s_per_1000_total"].get("median")
            else:
                row[f"open_{rate}_p50_p99_ms"] = "skipped (saturated)"
        rows.append(row)
    return rows


def ratios_to(rows: list[dict[str, Any]], reference: str = "restate") -> dict[str, Any]:
    """Each engine's headline figures divided by the reference engine's (same box, same run)."""
    ref = next((r for r in rows if r["engine"] == reference), None)
    if ref is None:
        return {}
    keys = ("burst_per_s", "burst_cpu_s_per_1000", "closed_p50_ms", "closed_p99_ms",
            "max_rate_held_per_s")  # fmt: skip
    out: dict[str, Any] = {
        "_read_as": f"engine / {reference}: above 1 is more (throughput, rate held: better; "
        "CPU, latency: worse)"
    }
    for row in rows:
        if row["engine"] == reference:
            continue
        out[row["engine"]] = {
            k: round(row[k] / ref[k], 2) if row.get(k) and ref.get(k) else None for k in keys
        }
    return out


def plot(summary: dict[str, dict[str, Any]], path: str, title: str, p99_target: float) -> None:
    with plotting() as plt:
        if plt is None:
            return
        from matplotlib.ticker import NullFormatter

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
        for j, (name, s) in enumerate(summary.items()):
            color = f"C{j}"
            points = [(float(rate), e) for rate, e in s["open"].items() if e.get("runs")]
            for p, style in (("p99", "-o"), ("p50", "--s")):
                xy = [(r, e.get(p, {}).get("median")) for r, e in points]
                xy = [(x, y) for x, y in xy if y]
                ax1.plot([x for x, _ in xy], [y for _, y in xy], style, color=color, markersize=4,
                         label=f"{name} {p}")  # fmt: skip
            xy = [(r, e["cpu_s_per_1000_total"].get("median")) for r, e in points]
            xy = [(x, y) for x, y in xy if y]
            ax2.plot([x for x, _ in xy], [y for _, y in xy], "-o", color=color, markersize=4,
                     label=f"{name}, open loop")  # fmt: skip
            burst = s["burst"]["cpu_s_per_1000_total"].get("median")
            if burst:
                ax2.axhline(burst, color=color, linestyle=":", alpha=0.8,
                            label=f"{name}, burst ({burst:g})")  # fmt: skip
        ax1.axhline(p99_target, color="red", linestyle=":", alpha=0.6,
                    label=f"p99 target {p99_target:g} ms")  # fmt: skip
        rates = sorted({float(r) for s in summary.values() for r in s["open"]})
        for ax in (ax1, ax2):
            if not ax.has_data():
                continue
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(rates, [f"{r:g}" for r in rates])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.grid(alpha=0.3, which="both")
            ax.set_xlabel("offered rate, W3 starts per second (open loop)")
            ax.legend(fontsize=7)
        ax1.set_ylabel("latency from the scheduled start, ms (median of repeats)")
        ax1.set_title("latency against offered rate (a line ends where the engine saturated)",
                      fontsize=9)  # fmt: skip
        ax2.set_ylabel("CPU-s per 1,000 executions (engine + client)")
        ax2.set_title("CPU per execution: open loop (lines), burst (dotted)", fontsize=9)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        say(f"wrote {path}")
