"""Compare W3 on Cerebelum, Restate and DBOS Transact at the same offered rates, same box, same run.

    python -m bench.compare [--engines cerebelum restate dbos] [--cerebelum-root PATH ...]
                            [--rates 25 50 100 200 400] [--open-seconds 20] [--repeat 3] ...

Each repeat runs every engine in turn (bench/compare/run.py gives the phases); the engines of
one repeat are interleaved with the next so a change in the box's load hits them all. Writes
bench/results/compare-<timestamp>.json (every run's phases, medians per engine, a side-by-side
table, ratios to Restate) and the .png beside it (latency p50/p99 against offered rate).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.common.base import LOGS, ROOT, say, settings
from bench.common.procfs import Tracked, pid_listening_on, port_of
from bench.common.results import run_id, to_json, write_result
from bench.compare import report
from bench.compare.engines import Engine
from bench.compare.engines.cerebelum import CerebelumEngine
from bench.compare.engines.dbos import DbosEngine
from bench.compare.engines.restate import RestateEngine
from bench.compare.run import EngineRun, Params
from cerebelum.config import Settings

DEFAULT_RATES = [25.0, 50.0, 100.0, 200.0, 400.0]
# DBOS's own PostgreSQL: off Cerebelum's dev ports (15432, ...) and the other benches'.
DEFAULT_DBOS_PG_PORT = 45532


def build_engines(args: argparse.Namespace, s: Settings) -> list[Engine]:
    engines: list[Engine] = []
    for kind in args.engines:
        if kind == "cerebelum":
            engines.append(CerebelumEngine(s))
            engines += [CerebelumEngine(s, Path(root)) for root in args.cerebelum_root]
        elif kind == "restate":
            engines.append(RestateEngine(args.restate_handler, args.restate_client))
        elif kind == "dbos":
            engines.append(DbosEngine(args.dbos_pg_port))
    if "cerebelum" not in args.engines:
        engines = [CerebelumEngine(s, Path(root)) for root in args.cerebelum_root] + engines
    names = [e.name for e in engines]
    if len(set(names)) < len(names):
        raise SystemExit(
            f"two engines with one name in {names}: is a --cerebelum-root this checkout?"
        )
    return engines


def bystanders(s: Settings, dbos_pg_port: int) -> list[Tracked]:
    """Services that stay up while another engine runs: reported apart, never in its totals."""
    found = []
    for name, port in (
        ("bystander:kafka-broker", port_of(s.kafka_bootstrap)),
        ("bystander:cerebelum-postgres", port_of(s.database_url)),
        ("bystander:dbos-postgres", dbos_pg_port),
    ):
        pid = pid_listening_on(port)
        if pid is not None:
            found.append(Tracked(name, pid, tree="postgres" in name))
    return found


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--engines",
        nargs="+",
        default=["cerebelum", "restate", "dbos"],
        choices=["cerebelum", "restate", "dbos"],
    )
    p.add_argument(
        "--cerebelum-root",
        action="append",
        default=[],
        metavar="PATH",
        help="also run Cerebelum's worker and mirror from this checkout (its own "
        ".venv); repeatable; the engine is named cerebelum@REV",
    )
    p.add_argument(
        "--rates",
        nargs="+",
        type=float,
        default=DEFAULT_RATES,
        help="open-loop offered rates, starts/s (default 25 50 100 200 400)",
    )
    p.add_argument("--open-seconds", type=float, default=20.0, help="each open-loop rate's length")
    p.add_argument("--closed", type=int, default=500, help="closed-loop executions")
    p.add_argument("--warmup", type=int, default=200, help="executions one by one before measuring")
    p.add_argument("--burst", type=int, default=5000, help="executions started at once")
    p.add_argument("--idle-seconds", type=float, default=20.0, help="idle CPU measured this long")
    p.add_argument(
        "--idle-settle", type=float, default=75.0,
        help="seconds of nothing before the idle CPU is measured (start-up work passes: the "
        "JVM compiling the paths the warm-up used, the reset topics' files deleted 60 s later)",
    )  # fmt: skip
    p.add_argument("--repeat", type=int, default=1, help="runs of every engine; medians reported")
    p.add_argument(
        "--p99-target-ms",
        type=float,
        default=100.0,
        help="a rate is held when every execution completed and p99 <= this",
    )
    p.add_argument(
        "--search-steps",
        type=int,
        default=2,
        help="bisections between the highest rate held and the next (0: none)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds after the last start before an execution counts as lost",
    )
    p.add_argument(
        "--settle-max",
        type=float,
        default=60.0,
        help="longest wait for an engine to fall back to idle CPU after a phase",
    )
    p.add_argument(
        "--no-skip", action="store_true", help="run every rate even after the engine saturated"
    )
    p.add_argument(
        "--restate-handler",
        choices=["workflow", "service"],
        default="workflow",
        help="W3 as a Restate workflow keyed by execution id, or a plain service",
    )
    p.add_argument(
        "--restate-client",
        choices=["lean", "sdk", "sdk-http1"],
        default="lean",
        help="lean HTTP/1.1 (default), or the SDK's httpx client over HTTP/2 or HTTP/1.1",
    )
    p.add_argument("--dbos-pg-port", type=int, default=DEFAULT_DBOS_PG_PORT)
    return p


def main(args: argparse.Namespace) -> None:
    # A plain `kill` unwinds like Ctrl-C, so every engine's processes are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    s = settings()
    engines = build_engines(args, s)
    if not engines:
        raise SystemExit("no engine to run")
    params = Params(
        warmup=args.warmup, idle_seconds=args.idle_seconds, idle_settle=args.idle_settle,
        closed=args.closed, burst=args.burst,
        rates=sorted(args.rates), open_seconds=args.open_seconds,
        drain_timeout=args.drain_timeout, settle_max=args.settle_max,
        p99_target_ms=args.p99_target_ms, search_steps=args.search_steps,
        skip_saturated=not args.no_skip,
    )  # fmt: skip
    run = run_id("compare")
    say(f"{run}: engines {[e.name for e in engines]}, rates {params.rates}, x{args.repeat}")
    runs: dict[str, list[dict[str, Any]]] = {e.name: [] for e in engines}
    described: dict[str, Any] = {}
    failures: list[dict[str, Any]] = []
    partial = LOGS / run / "partial.json"
    try:
        for engine in engines:
            engine.prepare()
        for k in range(args.repeat):
            for engine in engines:
                say(f"repeat {k + 1}/{args.repeat}: {engine.name}")
                logs = LOGS / run / f"{engine.name.replace('@', '-')}-r{k + 1}"
                try:
                    result = EngineRun(engine, params, logs, bystanders(s, args.dbos_pg_port)).run()
                except Exception as exc:  # one engine failing must not lose the others' runs
                    say(f"{engine.name} failed: {exc!r}; see {logs}")
                    failures.append({"engine": engine.name, "repeat": k + 1, "error": repr(exc)})
                    continue
                result["repeat"] = k + 1
                runs[engine.name].append(result)
                described.setdefault(engine.name, engine.describe())
                partial.write_text(to_json({"runs": runs, "failures": failures}))
    finally:
        for engine in engines:
            engine.close()
    summary = {name: report.summarise_engine(rs) for name, rs in runs.items() if rs}
    rows = report.table(summary)
    doc = {
        "params": {**vars(args), "rates": params.rates},
        "engines": described,
        "table": rows,
        "ratios_to_restate": report.ratios_to(rows),
        "summary": summary,
        "runs": runs,
        "failures": failures,
        "logs": str((LOGS / run).relative_to(ROOT)),
        "caveats": "one box: every engine, its services and the generator share the cores; "
        "other_programs_cpu_s is the box's busy CPU that none of them used; bystanders_cpu_s is "
        "the idle services of the engines not under test",
    }
    path = write_result("compare", doc)
    if not summary:
        raise SystemExit(f"every engine run failed: {failures}")
    noise = [e["other_programs_cores"].get("median", 0.0) for e in summary.values()]
    title = (
        f"W3 on one {os.cpu_count()}-core box, medians of {args.repeat} run(s), "
        f"{time.strftime('%Y-%m-%d %H:%M')}; other programs took "
        f"{min(noise):.2f}-{max(noise):.2f} cores meanwhile"
    )
    report.plot(summary, str(path.with_suffix(".png")), title, args.p99_target_ms)
    for row in rows:
        say(str(row))


if __name__ == "__main__":
    main(parser().parse_args())
