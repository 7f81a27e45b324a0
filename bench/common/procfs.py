"""CPU and memory of processes from /proc, and finding the services' processes by their ports."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common.base import CLK_TCK, say
from cerebelum.config import Settings


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name is in parentheses and may hold spaces: split after its closing one.
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime + stime of a process (all its threads); with `children`, plus its reaped children."""
    f = _stat_fields(pid)
    # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    ticks = int(f[11]) + int(f[12])
    if children:
        ticks += int(f[13]) + int(f[14])
    return ticks / CLK_TCK


def parent_of(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if parent_of(int(entry.name)) == pid:
                    found.append(int(entry.name))
    return found


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def system_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (not idle, not waiting for I/O)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLK_TCK


def pid_listening_on(port: int) -> int | None:
    """The process listening on 127.0.0.1:`port` (the broker, PostgreSQL's postmaster)."""
    out = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"pid=(\d+)", out)
    return int(match.group(1)) if match else None


def port_of(endpoint: str) -> int:
    """The port of 'host:port' or of a postgresql:// URL."""
    match = re.search(r":(\d+)(?:/|$)", endpoint.split("@")[-1])
    if match is None:
        raise ValueError(f"no port in {endpoint!r}")
    return int(match.group(1))


@dataclass
class Tracked:
    """A process whose CPU a benchmark reports. `tree`: it and its children (PostgreSQL: the
    postmaster, every backend, and through cutime the ones that exited meanwhile)."""

    name: str
    pid: int
    tree: bool = False
    exclude: set[int] = field(default_factory=set)  # e.g. the harness's own PG backend

    def cpu(self) -> float:
        if not self.tree:
            return cpu_seconds(self.pid)
        total = cpu_seconds(self.pid, children=True)
        for child in children_of(self.pid):
            if child not in self.exclude:
                with contextlib.suppress(OSError):
                    total += cpu_seconds(child)
        return total


class CpuMeter:
    """CPU seconds of named processes between `start()` and `stop()`, plus the whole machine's,
    so what other programs on a shared box took in the same window can be reported too."""

    def __init__(self, tracked: Iterable[Tracked]) -> None:
        self.tracked = list(tracked)
        self._before: dict[str, float] = {}
        self._after: dict[str, float] = {}
        self._t0 = self._t1 = 0.0

    def _read(self) -> dict[str, float]:
        out: dict[str, float] = {
            "_machine": system_busy_seconds(),
            "_harness": cpu_seconds(os.getpid()),
        }
        for t in self.tracked:
            try:
                out[t.name] = t.cpu()
            except OSError:  # exited meanwhile: its CPU in the window is lost, count none
                out[t.name] = self._before.get(t.name, 0.0)
        return out

    def add_new(self, t: Tracked) -> None:
        """Track a process started after `start()`: all its CPU falls in the window."""
        self.tracked.append(t)
        self._before[t.name] = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._before = self._read()

    def stop(self) -> None:
        self._t1 = time.monotonic()
        self._after = self._read()

    def report(self, executions: int | None = None) -> dict[str, Any]:
        wall = self._t1 - self._t0
        delta = {k: self._after[k] - self._before[k] for k in self._before}
        ours = sum(v for k, v in delta.items() if not k.startswith("_"))
        machine = delta.pop("_machine")
        harness = delta.pop("_harness")
        report: dict[str, Any] = {
            "wall_s": round(wall, 3),
            "cpu_s": {k: round(v, 3) for k, v in delta.items()},
            "cpu_s_total": round(ours, 3),
            "harness_cpu_s": round(harness, 3),
            # Busy CPU of the whole box minus ours and the harness: other people's work.
            "other_programs_cpu_s": round(max(0.0, machine - ours - harness), 3),
            "machine_busy_cores": round(machine / wall, 2) if wall > 0 else None,
        }
        if executions:
            per = 1000 / executions
            report["cpu_s_per_1000"] = {k: round(v * per, 4) for k, v in delta.items()}
            report["cpu_s_per_1000_total"] = round(ours * per, 4)
        return report


def service_processes(s: Settings) -> list[Tracked]:
    """The broker and PostgreSQL, found by their ports (they may belong to another user)."""
    tracked = []
    broker = pid_listening_on(port_of(s.kafka_bootstrap))
    if broker is not None:
        tracked.append(Tracked("broker", broker))
    postmaster = pid_listening_on(port_of(s.database_url))
    if postmaster is not None:
        tracked.append(Tracked("postgres", postmaster, tree=True))
    if len(tracked) < 2:
        say("warning: broker or PostgreSQL process not found by port; their CPU is not reported")
    return tracked
