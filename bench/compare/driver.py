"""The generator: one process per engine run, the same code for every engine.

    python -m bench.compare.driver --engine cerebelum|restate|dbos --config JSON

It connects the engine's own client (bench/compare/engines/), prints `ready`, then reads one
JSON command per line on stdin and answers each with one JSON line on stdout:

    {"op": "closed", "n": N, "timeout": S}   N executions one after another
    {"op": "burst", "n": N, "timeout": S}    N executions started at once; time to the last one
    {"op": "open", "rate": R, "seconds": D, "timeout": S}
                                             open loop: execution k starts at t0 + k/R whatever
                                             has completed (one task each, so a slow start never
                                             delays the next); latency is completion minus the
                                             *scheduled* start, so a backlog shows as latency
                                             and is never hidden (no coordinated omission)
    {"op": "quit"}

An execution counts when the client returned W3's exact output ({"n": (i + 1) * 2}); one that
failed, returned anything else, or had not completed `timeout` seconds after the last start
is counted apart (errors, wrong, lost) and is not in the percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from typing import Any, TextIO

import orjson

from bench.common.results import percentiles
from bench.compare.engines import EngineClient, client_for, w3_output
from bench.loadgen import execution_id

# Points of the open-loop latency series kept per phase (for inspection; the percentiles use all).
MAX_SERIES_POINTS = 400
# Open-loop starts are scheduled from this far ahead, so the first is not already late.
LEAD_S = 0.05


class Outcomes:
    """What a set of executions came to."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.done_at: list[float] = []
        self.errors = 0
        self.wrong = 0
        self.lost = 0
        self.first_error: str | None = None

    async def run(self, client: EngineClient, eid: str, i: int, t0: float) -> float | None:
        """One execution, latency measured from `t0`; returns it in ms, or None if it failed."""
        try:
            output = await client.execute(eid, i)
        except Exception as exc:
            self.errors += 1
            self.first_error = self.first_error or repr(exc)[:500]
            return None
        now = time.monotonic()
        if output != w3_output(i):
            self.wrong += 1
            self.first_error = self.first_error or f"wrong output for {i}: {output!r}"[:500]
            return None
        latency = (now - t0) * 1000
        self.latencies_ms.append(latency)
        self.done_at.append(now)
        return latency

    async def gather(self, tasks: list[asyncio.Task[float | None]], timeout: float) -> None:
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        self.lost = len(pending)

    def report(self, n: int) -> dict[str, Any]:
        return {
            "n": n,
            "ok": len(self.latencies_ms),
            "errors": self.errors,
            "wrong": self.wrong,
            "lost": self.lost,
            "first_error": self.first_error,
            "latency_ms": percentiles(self.latencies_ms),
        }


async def closed(client: EngineClient, n: int, timeout: float) -> dict[str, Any]:
    outcomes = Outcomes()
    prefix = secrets.token_hex(8)
    for i in range(n):
        eid = execution_id(prefix, i)
        try:
            await asyncio.wait_for(outcomes.run(client, eid, i, time.monotonic()), timeout)
        except TimeoutError:
            outcomes.lost += 1
    return outcomes.report(n)


async def burst(client: EngineClient, n: int, timeout: float) -> dict[str, Any]:
    outcomes = Outcomes()
    prefix = secrets.token_hex(8)
    t0 = time.monotonic()
    tasks = [
        asyncio.ensure_future(outcomes.run(client, execution_id(prefix, i), i, t0))
        for i in range(n)
    ]
    await outcomes.gather(tasks, timeout)
    report = outcomes.report(n)
    if outcomes.done_at:
        seconds = max(outcomes.done_at) - t0
        report["seconds"] = round(seconds, 3)
        report["executions_per_s"] = round(len(outcomes.done_at) / seconds, 1)
    return report


async def open_loop(
    client: EngineClient, rate: float, seconds: float, timeout: float
) -> dict[str, Any]:
    outcomes = Outcomes()
    prefix = secrets.token_hex(8)
    count = max(1, round(rate * seconds))
    interval = 1.0 / rate
    lag_ms: list[float] = []
    tasks: list[asyncio.Task[float | None]] = []
    scheduled: list[float] = []
    t_start = time.monotonic() + LEAD_S
    for i in range(count):
        at = t_start + i * interval
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        lag_ms.append((time.monotonic() - at) * 1000)
        scheduled.append(at)
        tasks.append(asyncio.ensure_future(outcomes.run(client, execution_id(prefix, i), i, at)))
    sent_at = time.monotonic()
    await outcomes.gather(tasks, timeout)
    report = outcomes.report(count)
    report.update(
        rate_per_s=rate,
        seconds=seconds,
        achieved_start_rate_per_s=round(count / max(sent_at - t_start, 1e-9), 1),
        # How late the generator started executions against the schedule: if this grows, the
        # generator (or the box) is the bottleneck, not the engine.
        send_lag_ms=percentiles(lag_ms, (50, 99)),
    )
    if outcomes.done_at:
        span = max(outcomes.done_at) - t_start
        report["completion_rate_per_s"] = round(len(outcomes.done_at) / span, 1)
    series = [
        [round(at - t_start, 3), round(latency, 2)]
        for at, task in zip(scheduled, tasks, strict=True)
        if task.done() and not task.cancelled() and (latency := task.result()) is not None
    ]
    report["series"] = series[:: max(1, len(series) // MAX_SERIES_POINTS)]
    return report


async def serve(client: EngineClient, out: TextIO) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", file=out, flush=True)
    while line := await reader.readline():
        command = orjson.loads(line)
        op = command["op"]
        if op == "quit":
            break
        if op == "closed":
            result = await closed(client, command["n"], command["timeout"])
        elif op == "burst":
            result = await burst(client, command["n"], command["timeout"])
        elif op == "open":
            result = await open_loop(
                client, command["rate"], command["seconds"], command["timeout"]
            )
        else:
            result = {"error": f"unknown op {op!r}"}
        print(orjson.dumps(result).decode(), file=out, flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", required=True, choices=["cerebelum", "restate", "dbos"])
    parser.add_argument("--config", required=True, help="the engine client's settings (JSON)")
    args = parser.parse_args()
    # The protocol gets stdout to itself: anything a library prints goes to stderr (the log).
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    client = client_for(args.engine, orjson.loads(args.config))
    await client.connect()
    try:
        await serve(client, out)
    finally:
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
