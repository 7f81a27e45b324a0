"""Latency: W3 executions one after another, and at a steady open-loop rate.

    python -m bench.latency [--n 1000] [--rate R ... | --rate-fraction 0.5 0.25 0.1]
                            [--open-seconds 20] [--repeat 3]

One worker and the mirror run, as in production. Each repetition measures, in order:
    1. closed loop, lean: produce a start-command (linger 0), wait until its ExecutionCompleted
       is read from cerebelum.events (read_committed), then the next; --n of them;
    2. closed loop, `Client.run`: the same through the public client (its producer lingers 2 ms
       to batch bursts, and it awaits the start's acknowledgement first);
    3. open loop, once per rate: starts scheduled at fixed intervals (1/rate) whatever completes;
       latency is the completion time minus the *scheduled* start time, so a backlog shows up as
       latency (no coordinated omission). The rates default to --rate-fraction times the
       end-to-end throughput of the latest bench/results/throughput-*.json; the first is the
       headline (50%), lower ones show where a steady load stops queueing.
Latency is the time from just before the start-command is handed to the producer to the moment
the harness reads the execution's ExecutionCompleted event.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench import common
from bench.common import Cluster, CpuMeter, say
from bench.loadgen import execution_id
from cerebelum.client import Client
from cerebelum.config import Settings
from cerebelum.constants import DEFAULT_NAMES
from cerebelum.core.commands import start_command

# The listener's fetch wait: the broker answers at once when records arrive and after this long
# otherwise, so it bounds the delay only of an idle fetch. 5 ms is the Client's own setting.
FETCH_MAX_WAIT_MS = 5
# Open-loop latencies kept per phase for the plot (the percentiles use all of them).
MAX_SERIES_POINTS = 2_000
# One execution that has not completed after this long is counted as lost, not waited for.
EXECUTION_TIMEOUT_S = 30.0


class Completions:
    """Follows cerebelum.events from its end; resolves waiters on ExecutionCompleted."""

    def __init__(self, s: Settings) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        self.done: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[float]] = {}
        # Executions whose every event is noted as (type, step, record timestamp ms, read at
        # wall ms): where an execution's time went (see `breakdown`).
        self.traced: dict[str, list[tuple[str, str | None, int, float]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        tps = common.events_tps()
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the lazy seek now: nothing committed after this is missed
            await self.consumer.position(tp)
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()

    async def _follow(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=1000)
            now = time.monotonic()
            wall_ms = time.time() * 1000
            for records in batches.values():
                for r in records:
                    trace = self.traced.get(r.key.decode()) if self.traced else None
                    if trace is not None:
                        event = orjson.loads(r.value)
                        trace.append((event["type"], event.get("step"), r.timestamp, wall_ms))
                    if b'"ExecutionCompleted"' in r.value:
                        eid = r.key.decode()
                        self.done[eid] = now
                        fut = self.waiters.pop(eid, None)
                        if fut is not None and not fut.done():
                            fut.set_result(now)

    def wait(self, eid: str) -> asyncio.Future[float]:
        fut = asyncio.get_running_loop().create_future()
        if eid in self.done:
            fut.set_result(self.done[eid])
        else:
            self.waiters[eid] = fut
        return fut


async def closed_lean(
    producer: AIOKafkaProducer, completions: Completions, n: int, prefix: str
) -> dict[str, Any]:
    latencies: list[float] = []
    lost = 0
    sent: dict[str, tuple[float, float]] = {}  # execution id -> (sent, acknowledged), wall ms
    for i in range(n):
        eid = execution_id(prefix, i)
        waiter = completions.wait(eid)
        completions.traced[eid] = []
        t0 = time.monotonic()
        t0_wall = time.time() * 1000
        ack = await producer.send(DEFAULT_NAMES.commands, start_command(eid, "w3", {"n": i}), eid.encode())
        ack.add_done_callback(
            lambda _, e=eid, t=t0_wall: sent.__setitem__(e, (t, time.time() * 1000))
        )
        try:
            done = await asyncio.wait_for(waiter, EXECUTION_TIMEOUT_S)
        except TimeoutError:
            lost += 1
            continue
        latencies.append((done - t0) * 1000)
        await ack  # long since acknowledged: the execution completed
    result = _closed(n, lost, latencies)
    result["breakdown_ms"] = breakdown(sent, completions.traced)
    completions.traced.clear()
    return result


def breakdown(
    sent: dict[str, tuple[float, float]],
    traces: dict[str, list[tuple[str, str | None, int, float]]],
) -> dict[str, dict[str, float]]:
    """Where each execution's time went, from the events' own timestamps (the worker's clock at
    append, ms resolution; the transaction commits a little later):

        start_acked       start-command sent -> acknowledged by Kafka
        to_started        start-command sent -> ExecutionStarted appended (fetch + decide)
        step:NAME         StepScheduled(NAME) appended -> StepCompleted(NAME) appended: the
                          scheduling transaction's commit, the run, the outcome's decide
        started_to_done   ExecutionStarted -> ExecutionCompleted appended
        to_listener       ExecutionCompleted appended -> read by this harness (commit + fetch)
    """
    parts: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        parts.setdefault(name, []).append(value)

    for eid, trace in traces.items():
        if eid not in sent or not trace:
            continue
        t_sent, t_acked = sent[eid]
        first = {(kind, step): ts for kind, step, ts, _ in reversed(trace)}
        read = {kind: at for kind, _, _, at in trace}
        started = first.get(("ExecutionStarted", None))
        completed = first.get(("ExecutionCompleted", None))
        add("start_acked", t_acked - t_sent)
        if started is not None:
            add("to_started", started - t_sent)
        for (kind, step), ts in first.items():
            if kind == "StepScheduled" and ("StepCompleted", step) in first:
                add(f"step:{step}", first[("StepCompleted", step)] - ts)
        if started is not None and completed is not None:
            add("started_to_done", completed - started)
            add("to_listener", read["ExecutionCompleted"] - completed)
    return {name: common.percentiles(values) for name, values in parts.items()}


async def closed_client(client: Client, n: int, prefix: str) -> dict[str, Any]:
    latencies: list[float] = []
    lost = 0
    for i in range(n):
        eid = execution_id(prefix, i)
        t0 = time.monotonic()
        try:
            result = await client.run("w3", {"n": i}, execution_id=eid, timeout=EXECUTION_TIMEOUT_S)
        except TimeoutError:
            lost += 1
            continue
        if result.status == "completed":
            latencies.append((time.monotonic() - t0) * 1000)
        else:
            lost += 1
    return _closed(n, lost, latencies)


def _closed(n: int, lost: int, latencies: list[float]) -> dict[str, Any]:
    return {
        "n": n,
        "lost": lost,
        "latency_ms": common.percentiles(latencies),
        "samples_ms": [round(x, 2) for x in latencies],
    }


async def open_loop(
    producer: AIOKafkaProducer, completions: Completions, rate: float, seconds: float, prefix: str
) -> dict[str, Any]:
    count = max(1, int(rate * seconds))
    interval = 1.0 / rate
    scheduled: list[float] = []
    waiters: list[asyncio.Future[float]] = []
    send_lag: list[float] = []
    ack_ms: list[float] = []
    t_start = time.monotonic() + 0.05
    for i in range(count):
        at = t_start + i * interval
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        eid = execution_id(prefix, i)
        waiters.append(completions.wait(eid))
        scheduled.append(at)
        send_lag.append((time.monotonic() - at) * 1000)
        ack = await producer.send(DEFAULT_NAMES.commands, start_command(eid, "w3", {"n": i}), eid.encode())
        ack.add_done_callback(lambda _, at=at: ack_ms.append((time.monotonic() - at) * 1000))
    sent_at = time.monotonic()
    done, pending = await asyncio.wait(waiters, timeout=EXECUTION_TIMEOUT_S)
    latencies = [
        (w.result() - at) * 1000 for w, at in zip(waiters, scheduled, strict=True) if w in done
    ]
    for w in pending:
        w.cancel()
    series = [
        [round(at - t_start, 3), round((w.result() - at) * 1000, 2)]
        for w, at in zip(waiters, scheduled, strict=True)
        if w in done
    ]
    # Every n-th point is enough for the plot and keeps the JSON small; the percentiles above
    # are computed from all of them.
    series = series[:: max(1, len(series) // MAX_SERIES_POINTS)]
    return {
        "rate_per_s": rate,
        "count": count,
        "achieved_start_rate_per_s": round(count / max(sent_at - t_start, 1e-9), 1),
        "lost": len(pending),
        "latency_ms": common.percentiles(latencies),
        # How late the harness handed starts to the producer, and when Kafka acknowledged them
        # (from the scheduled time): if these grow, the harness or the broker is the bottleneck.
        "send_lag_ms": common.percentiles(send_lag),
        "start_ack_ms": common.percentiles(ack_ms),
        "series": series,
    }


def default_rates(fractions: list[float]) -> list[float]:
    latest = common.latest_result("throughput")
    if latest is None:
        raise SystemExit("no bench/results/throughput-*.json: run bench.throughput or pass --rate")
    summary = latest["summary"]
    key = (
        "postgres_executions_per_s"
        if "postgres_executions_per_s" in summary
        else "kafka_executions_per_s"
    )
    measured = summary[key]["median"]
    say(f"open-loop rates: {fractions} x {measured:g}/s ({key}, {latest['finished_at']})")
    return [round(f * measured, 1) for f in fractions]


async def run_once(s: Settings, args: argparse.Namespace, rates: list[float]) -> dict[str, Any]:
    run = common.run_id("latency")
    await common.prepare(s)
    if not args.no_reset:
        say("recreating topics, truncating tables")
        await common.reset_topics(s)
        await common.truncate_tables(s)
    cluster = Cluster(s, run)
    try:
        cluster.start_mirror()
        cluster.start_worker(**common.worker_env(args.worker_env))
        cluster.wait_workers_ready()
        cluster.wait_mirror_ready()
        completions = Completions(s)
        await completions.start()
        producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=0
        )
        await producer.start()
        tracked = common.service_processes(s) + cluster.tracked()
        result: dict[str, Any] = {
            "run": run,
            "worker_env": args.worker_env,
            "logs": str(cluster.logs.relative_to(common.ROOT)),
        }
        try:
            say(f"warm-up: {args.warmup} executions one by one")
            await closed_lean(producer, completions, args.warmup, secrets.token_hex(8))
            if args.idle_seconds:
                # What the cluster burns doing nothing (consumers polling with short fetch
                # waits, this harness's listener included): at a low steady rate this, not
                # the executions, is most of the CPU per execution.
                say(f"idle: {args.idle_seconds:g} s")
                meter = CpuMeter(tracked)
                meter.start()
                await asyncio.sleep(args.idle_seconds)
                meter.stop()
                idle = meter.report()
                result["idle_cores"] = {
                    k: round(v / idle["wall_s"], 3) for k, v in idle["cpu_s"].items()
                }
            meter = CpuMeter(tracked)
            meter.start()
            say(f"closed loop (lean): {args.n} executions one by one")
            result["closed_lean"] = await closed_lean(
                producer, completions, args.n, secrets.token_hex(8)
            )
            meter.stop()
            result["closed_lean"]["cpu"] = meter.report(args.n)
            async with Client(s) as client:
                await client.listen()
                say(f"closed loop (Client.run): {args.n} executions one by one")
                result["closed_client"] = await closed_client(client, args.n, secrets.token_hex(8))
            result["open_loops"] = []
            for rate in rates:
                say(f"open loop: {rate:.0f}/s for {args.open_seconds:g} s")
                meter = CpuMeter(tracked)
                meter.start()
                phase = await open_loop(
                    producer, completions, rate, args.open_seconds, secrets.token_hex(8)
                )
                meter.stop()
                phase["cpu"] = meter.report(phase["count"])
                result["open_loops"].append(phase)
                say(f"open loop {rate:.0f}/s: {phase['latency_ms']}")
                await asyncio.sleep(2.0)  # let a backlog drain before the next rate
        finally:
            await producer.stop()
            await completions.stop()
        for name in ("closed_lean", "closed_client"):
            say(f"{name}: {result[name]['latency_ms']}")
        return result
    finally:
        cluster.close()


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for phase in ("closed_lean", "closed_client"):
        out[phase] = {
            p: common.spread([r[phase]["latency_ms"][p] for r in runs])
            for p in ("p50", "p95", "p99")
        }
        out[phase]["cpu_s_per_1000_total"] = common.spread(
            [r[phase]["cpu"]["cpu_s_per_1000_total"] for r in runs if "cpu" in r[phase]]
        )
    for k, first in enumerate(runs[0]["open_loops"]):
        phases = [r["open_loops"][k] for r in runs]
        out[f"open_loop_{first['rate_per_s']:g}_per_s"] = {
            **{
                p: common.spread([x["latency_ms"][p] for x in phases])
                for p in ("p50", "p95", "p99")
            },
            "cpu_s_per_1000_total": common.spread(
                [x["cpu"]["cpu_s_per_1000_total"] for x in phases]
            ),
        }
    return out


def plot(runs: list[dict[str, Any]], path: str) -> None:
    with common.plotting() as plt:
        if plt is None:
            return
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        for k, r in enumerate(runs):
            curves = [("closed lean", "-", r["closed_lean"]["samples_ms"]),
                      ("closed Client.run", "--", r["closed_client"]["samples_ms"])]  # fmt: skip
            for phase in r["open_loops"]:
                curves.append(
                    (f"open {phase['rate_per_s']:.0f}/s", ":", [p[1] for p in phase["series"]])
                )
            for j, (name, style, samples) in enumerate(curves):
                samples = sorted(samples)
                if not samples:
                    continue
                ys = [100 * (i + 1) / len(samples) for i in range(len(samples))]
                ax1.plot(samples, ys, style, color=f"C{j}", alpha=0.8,
                         label=name if k == 0 else None)  # fmt: skip
        for target in (10, 20):
            ax1.axvline(target, color="red", linestyle=":", alpha=0.5)
        ax1.set_xscale("log")
        ax1.set_xlabel("latency, ms (start-command to ExecutionCompleted read)")
        ax1.set_ylabel("percent of executions")
        ax1.legend(fontsize=7)
        ax1.grid(alpha=0.3, which="both")
        for k, r in enumerate(runs):
            for j, phase in enumerate(r["open_loops"]):
                series = phase["series"]
                label = f"{phase['rate_per_s']:.0f}/s" if k == 0 else None
                ax2.plot([p[0] for p in series], [p[1] for p in series], ".", markersize=1.5,
                         color=f"C{j}", label=label)  # fmt: skip
        ax2.set_yscale("log")
        ax2.set_xlabel("seconds into the open-loop phase")
        ax2.set_ylabel("latency, ms")
        ax2.set_title("open loop, every run, by start rate", fontsize=9)
        ax2.legend(fontsize=7, markerscale=6)
        ax2.grid(alpha=0.3, which="both")
        fig.suptitle("W3 latency, one worker")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        say(f"wrote {path}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000, help="closed-loop executions (default 1000)")
    p.add_argument("--warmup", type=int, default=100, help="executions before measuring")
    p.add_argument("--rate", type=float, action="append", help="open-loop starts/s (repeatable)")
    p.add_argument("--rate-fraction", type=float, nargs="+", default=[0.5, 0.25, 0.1],
                   help="without --rate: fractions of the latest measured throughput")  # fmt: skip
    p.add_argument("--open-seconds", type=float, default=20.0, help="open-loop duration")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--idle-seconds", type=float, default=10.0, help="idle CPU measured this long")
    p.add_argument("--no-reset", action="store_true", help="keep topics and tables as they are")
    p.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the worker (see bench/diag)")  # fmt: skip
    return p


async def main(args: argparse.Namespace) -> None:
    s = common.settings()
    rates = args.rate or default_rates(args.rate_fraction)
    runs = []
    for i in range(args.repeat):
        say(f"run {i + 1}/{args.repeat}")
        runs.append(await run_once(s, args, rates))
    doc = {"params": {**vars(args), "rates": rates}, "summary": summarise(runs), "runs": runs}
    path = common.write_result("latency", doc)
    plot(runs, str(path.with_suffix(".png")))


if __name__ == "__main__":
    asyncio.run(main(parser().parse_args()))
