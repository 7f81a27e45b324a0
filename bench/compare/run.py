"""One engine's run: bring it up, drive every phase through the generator, meter every process.

In order (each phase's CPU is read from /proc for every process of the engine and for the
generator, `client`, from the phase's first start to its last completion):
    1. up from a clean state (the engine module's `up`), then start the generator and let it
       connect (Cerebelum's client starts listening);
    2. warm-up: --warmup executions one by one (connections, caches, JIT-less Python warm-up);
    3. idle: nothing running for --idle-settle seconds, then CPU per process as cores over
       --idle-seconds (the settling lets start-up work pass, which is not an idle cost: a
       JVM compiles the paths the warm-up used for a minute or so, and a broker deletes the
       files of topics the reset deleted 60 s later, file.delete.delay.ms);
    4. closed loop: --closed executions one after another; p50/p99;
    5. burst: --burst executions started at once; time to the last completion, CPU-s per 1,000;
    6. open-loop sweep: each --rates rate for --open-seconds; p50/p99 from the scheduled starts;
       a rate the engine cannot keep up with (an execution not done --drain-timeout seconds
       after the last start, or p50 over 1 s) ends the sweep unless --no-skip: the higher
       rates are recorded as skipped;
    7. the highest rate held (every execution completed and right, p99 <= --p99-target-ms):
       the highest swept rate held, refined by --search-steps bisections (geometric midpoints)
       between it and the next swept rate (when none held: halvings below the lowest);
    8. down.
After a phase that started executions, the run waits until the engine's CPU falls back to its
idle level (at most --settle-max seconds): a backlog still being worked off (Cerebelum's mirror,
Restate's background work) neither leaks into the next phase nor escapes the count; the CPU up
to that point is reported too (`cpu_until_settled`).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.common.base import ROOT, say
from bench.common.procfs import CpuMeter, Tracked
from bench.compare.engines import Engine

# An open-loop phase whose median is above this is far past saturation: higher rates only queue.
SATURATED_P50_MS = 1000.0
# Below one start per second an open loop says nothing a closed loop does not.
MIN_SEARCH_RATE = 1.0
# The settle check: CPU over this window, twice in a row at or under the idle level plus margin.
SETTLE_WINDOW_S = 0.5
SETTLE_MARGIN_CORES = 0.05
# The generator connects within seconds (DBOS migrates its tables at launch); 120 s is a hang.
DRIVER_READY_S = 120.0


@dataclass(frozen=True)
class Params:
    warmup: int
    idle_seconds: float
    idle_settle: float
    closed: int
    burst: int
    rates: list[float]
    open_seconds: float
    drain_timeout: float
    settle_max: float
    p99_target_ms: float
    search_steps: int
    skip_saturated: bool


class Driver:
    """The generator process (bench/compare/driver.py) for one engine run."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self._log = log.open("wb")
        self.popen = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            text=True, start_new_session=True,
        )  # fmt: skip
        self.log = log
        line = self._readline(DRIVER_READY_S)
        if line.strip() != "ready":
            self.close()
            raise RuntimeError(f"generator said {line!r}, not 'ready'; see {log}")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _readline(self, timeout: float) -> str:
        # select() sees the pipe, not the text buffer: fine while the generator answers each
        # command with exactly one line and says nothing unasked.
        out = self.popen.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], timeout)
        if not ready:
            raise TimeoutError(f"generator silent for {timeout:.0f} s; see {self.log}")
        line = out.readline()
        if not line:
            raise RuntimeError(f"generator exited ({self.popen.poll()}); see {self.log}")
        return line

    def call(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.popen.stdin is not None
        self.popen.stdin.write(orjson.dumps(command).decode() + "\n")
        self.popen.stdin.flush()
        result: dict[str, Any] = orjson.loads(self._readline(timeout))
        return result

    def close(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                assert self.popen.stdin is not None
                self.popen.stdin.write('{"op": "quit"}\n')
                self.popen.stdin.close()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


def cpu_report(meter: CpuMeter, executions: int, bystanders: list[Tracked]) -> dict[str, Any]:
    """The meter's report with bystanders (other engines' idle services, up on the same box)
    reported apart: neither in this engine's totals nor in `other_programs_cpu_s`."""
    report = meter.report(executions or None)
    names = {b.name for b in bystanders}
    report["bystanders_cpu_s"] = {k: report["cpu_s"].pop(k) for k in names if k in report["cpu_s"]}
    for k in names:
        report.get("cpu_s_per_1000", {}).pop(k, None)
    total = sum(report["cpu_s"].values())
    report["cpu_s_total"] = round(total, 3)
    report["cores_total"] = round(total / report["wall_s"], 3) if report["wall_s"] else None
    if executions:
        report["cpu_s_per_1000_total"] = round(total * 1000 / executions, 4)
    return report


class EngineRun:
    def __init__(
        self, engine: Engine, params: Params, logs: Path, bystanders: list[Tracked]
    ) -> None:
        self.engine = engine
        self.p = params
        self.logs = logs
        self.bystander_candidates = bystanders
        self.driver: Driver | None = None
        self.tracked: list[Tracked] = []
        self.bystanders: list[Tracked] = []
        self.idle_cores = 0.0

    # -- phases ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        p = self.p
        result: dict[str, Any] = {
            "engine": self.engine.name,
            "logs": str(self.logs.relative_to(ROOT)),
            "load_average_at_start": os.getloadavg(),
        }
        say(f"{self.engine.name}: up")
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self.engine.up(self.logs)  # inside: a half-started engine is stopped too
            base = [sys.executable, "-m", "bench.compare.driver", "--engine", self.engine.kind]
            self.driver = Driver(self.engine.driver_argv(base), self.logs / "driver.log")
            self.tracked = [*self.engine.tracked(), Tracked("client", self.driver.pid)]
            ours = {t.pid for t in self.tracked}
            self.bystanders = [b for b in self.bystander_candidates if b.pid not in ours]
            result["processes"] = {t.name: t.pid for t in self.tracked}
            say(f"{self.engine.name}: warm-up, {p.warmup} one by one")
            result["warmup"] = self.driver.call(
                {"op": "closed", "n": p.warmup, "timeout": p.drain_timeout},
                p.warmup * p.drain_timeout + 60,
            )
            if result["warmup"]["ok"] < p.warmup:
                raise RuntimeError(
                    f"{self.engine.name}: warm-up failed ({result['warmup']}); see {self.logs}"
                )
            result["idle"] = self.idle()
            say(f"{self.engine.name}: idle {result['idle']['cores_total']} cores")
            say(f"{self.engine.name}: closed loop, {p.closed} one by one")
            result["closed"] = self.metered(
                {"op": "closed", "n": p.closed, "timeout": p.drain_timeout}, p.closed, settle=False
            )
            self._say_latency("closed", result["closed"])
            say(f"{self.engine.name}: burst of {p.burst}")
            result["burst"] = self.metered(
                {"op": "burst", "n": p.burst, "timeout": p.drain_timeout * 10}, p.burst
            )
            say(
                f"{self.engine.name}: burst {result['burst'].get('executions_per_s')}/s, "
                f"{result['burst']['cpu'].get('cpu_s_per_1000_total')} CPU-s per 1,000"
            )
            result["open"] = self.sweep()
            result["search"], result["max_rate_held"] = self.search(result["open"])
            say(f"{self.engine.name}: highest rate held {result['max_rate_held']}")
        finally:
            if self.driver is not None:
                self.driver.close()
            say(f"{self.engine.name}: down")
            self.engine.down()
        return result

    def idle(self) -> dict[str, Any]:
        time.sleep(self.p.idle_settle)
        meter = CpuMeter([*self.tracked, *self.bystanders])
        meter.start()
        time.sleep(self.p.idle_seconds)
        meter.stop()
        report = cpu_report(meter, 0, self.bystanders)
        report["cores"] = {k: round(v / report["wall_s"], 4) for k, v in report["cpu_s"].items()}
        report["settled_s"] = self.p.idle_settle
        self.idle_cores = report["cores_total"] or 0.0
        return report

    def open_phase(self, rate: float) -> dict[str, Any]:
        p = self.p
        say(f"{self.engine.name}: open loop {rate:g}/s for {p.open_seconds:g} s")
        command = {
            "op": "open",
            "rate": rate,
            "seconds": p.open_seconds,
            "timeout": p.drain_timeout,
        }
        phase = self.metered(command, max(1, round(rate * p.open_seconds)))
        phase["held"] = self.held(phase)
        self._say_latency(f"open {rate:g}/s", phase)
        return phase

    def sweep(self) -> list[dict[str, Any]]:
        phases: list[dict[str, Any]] = []
        saturated_at: float | None = None
        for rate in self.p.rates:
            if saturated_at is not None:
                phases.append({"rate_per_s": rate, "skipped": f"saturated at {saturated_at:g}/s"})
                continue
            phase = self.open_phase(rate)
            phases.append(phase)
            p50 = phase["latency_ms"].get("p50", math.inf)
            if self.p.skip_saturated and (phase["lost"] or p50 > SATURATED_P50_MS):
                saturated_at = rate
        return phases

    def search(self, swept: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The highest swept rate held, then bisection towards the next swept rate (or, when
        none held, halving below the lowest until one does)."""
        ran = [ph for ph in swept if "skipped" not in ph]
        held = [ph["rate_per_s"] for ph in ran if ph["held"]]
        lo = max(held) if held else None
        above = [ph["rate_per_s"] for ph in swept if lo is None or ph["rate_per_s"] > lo]
        hi = min(above) if above else None
        phases: list[dict[str, Any]] = []
        for _ in range(self.p.search_steps if hi is not None else 0):
            assert hi is not None
            # Nothing held yet: halve downwards; then bisect between held and failed.
            mid = round(hi / 2 if lo is None else math.sqrt(lo * hi), 1)
            if mid < MIN_SEARCH_RATE or (lo is not None and not lo < mid < hi):
                break
            phase = self.open_phase(mid)
            phases.append(phase)
            if phase["held"]:
                lo = mid
            else:
                hi = mid
        summary = {
            "rate_per_s": lo,
            "failed_at_per_s": hi,
            "p99_target_ms": self.p.p99_target_ms,
            "note": (
                "no rate held"
                if lo is None
                else "every swept rate held: at least this"
                if hi is None
                else "held at rate_per_s, not at failed_at_per_s"
            ),
        }
        return phases, summary

    def held(self, phase: dict[str, Any]) -> bool:
        clean = not (phase["lost"] or phase["errors"] or phase["wrong"])
        p99 = phase["latency_ms"].get("p99", math.inf)
        return bool(clean and p99 <= self.p.p99_target_ms)

    # -- metering --------------------------------------------------------------------------

    def metered(self, command: dict[str, Any], n: int, settle: bool = True) -> dict[str, Any]:
        assert self.driver is not None
        everything = [*self.tracked, *self.bystanders]
        to_done, to_settled = CpuMeter(everything), CpuMeter(everything)
        to_done.start()
        to_settled.start()
        seconds = command.get("seconds", 0) + command["timeout"]
        if command["op"] == "closed":
            seconds = n * command["timeout"]
        phase = self.driver.call(command, seconds + 60)
        to_done.stop()
        phase["cpu"] = cpu_report(to_done, n, self.bystanders)
        if settle:
            settled_s = self.settle()
            to_settled.stop()
            after = cpu_report(to_settled, n, self.bystanders)
            phase["cpu_until_settled"] = {
                "settle_s": settled_s,
                "wall_s": after["wall_s"],
                "cpu_s_total": after["cpu_s_total"],
                "cpu_s_per_1000_total": after.get("cpu_s_per_1000_total"),
                "cpu_s": after["cpu_s"],
            }
        return phase

    def settle(self) -> float | None:
        """Seconds until the engine's CPU is back at its idle level (None: not within max)."""
        limit = self.idle_cores * 1.25 + SETTLE_MARGIN_CORES
        started = time.monotonic()
        calm = 0

        def total() -> float:
            cpu = 0.0
            for t in self.tracked:
                with contextlib.suppress(OSError):
                    cpu += t.cpu()
            return cpu

        before, t_before = total(), time.monotonic()
        while time.monotonic() - started < self.p.settle_max:
            time.sleep(SETTLE_WINDOW_S)
            now_cpu, now = total(), time.monotonic()
            cores = (now_cpu - before) / (now - t_before)
            before, t_before = now_cpu, now
            calm = calm + 1 if cores <= limit else 0
            if calm >= 2:
                return round(now - started, 2)
        say(f"{self.engine.name}: not back to idle CPU within {self.p.settle_max:g} s")
        return None

    def _say_latency(self, what: str, phase: dict[str, Any]) -> None:
        lat = phase["latency_ms"]
        say(
            f"{self.engine.name}: {what}: p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms, "
            f"ok {phase['ok']}/{phase['n']} (errors {phase['errors']}, lost {phase['lost']}), "
            f"{phase['cpu'].get('cpu_s_per_1000_total')} CPU-s per 1,000, "
            f"other programs {phase['cpu']['other_programs_cpu_s']} CPU-s"
        )
