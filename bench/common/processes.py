"""The processes a benchmark starts: workers and mirrors (`cerebelum ...`), the load generator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common.base import APP, DIAG_PYTHONPATH, LOGS, POLL_S, ROOT, WALL_MINUS_MONO, say
from bench.common.procfs import Tracked
from cerebelum.config import Settings
from cerebelum.constants import PARTITIONS
from cerebelum.worker.ranges import parse_ranges

LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_time(line: str) -> float | None:
    """A log line's own timestamp, on the monotonic timeline."""
    match = LOG_TIME.match(line)
    if match is None:
        return None
    wall = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return wall - WALL_MINUS_MONO


class Proc:
    """A process a benchmark started (a worker, a mirror, a peer engine's server), its log in a
    file."""

    def __init__(
        self, name: str, args: list[str], log: Path, env: dict[str, str], cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self.spawned_at = time.monotonic()
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C on the bench does not hit it mid-measurement
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.popen.pid

    def lines(self) -> list[str]:
        try:
            return self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def find(self, pattern: str) -> list[tuple[str, re.Match[str]]]:
        rx = re.compile(pattern)
        return [(line, m) for line in self.lines() if (m := rx.search(line))]

    def wait_for(self, pattern: str, timeout: float = 120.0) -> tuple[str, re.Match[str]]:
        """The first log line matching `pattern` (blocking poll)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = self.find(pattern)
            if hits:
                return hits[0]
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}); see {self.log}")
            time.sleep(POLL_S)
        raise TimeoutError(f"{self.name}: no {pattern!r} within {timeout}s; see {self.log}")

    def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM (graceful: a worker leaves the group), SIGKILL after `timeout`; seconds taken."""
        started = time.monotonic()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"{self.name} did not stop within {timeout}s: killing it")
                self.popen.kill()
                self.popen.wait()
        return time.monotonic() - started


def process_env(s: Settings, root: Path = ROOT, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CEREBELUM_KAFKA=s.kafka_bootstrap,
        CEREBELUM_DATABASE_URL=s.database_url,
        PYTHONPATH=str(root),
    )
    env.update(extra)
    return env


def worker_env(items: list[str]) -> dict[str, str]:
    """`--worker-env KEY=VALUE` flags as a dict; a BENCH_* key also loads bench/diag."""
    env = dict(item.split("=", 1) for item in items)
    if any(key.startswith("BENCH_") for key in env):
        env.setdefault("PYTHONPATH", DIAG_PYTHONPATH)
    return env


def python_for(root: Path) -> str:
    """The interpreter that runs a checkout's code: ours, or that checkout's own .venv's."""
    return sys.executable if root == ROOT else str(root / ".venv" / "bin" / "python")


class Cluster:
    """The workers and mirror one benchmark run starts; `close()` stops them all.

    `root`: the checkout whose code they run (default this one); another checkout runs with its
    own `.venv/bin/python` and its own `bench.app` (bench/compare A/Bs two revisions this way).
    """

    def __init__(self, s: Settings, run: str, root: Path = ROOT) -> None:
        self.s = s
        self.run = run
        self.root = root
        self.python = python_for(root)
        self.logs = LOGS / run
        self.procs: list[Proc] = []
        self.workers: list[Proc] = []  # the live ones
        self.mirror: Proc | None = None
        self._workers_started = 0

    def _spawn(
        self, name: str, args: list[str], wrapper: list[str] | None = None, **env: str
    ) -> Proc:
        cmd = [*(wrapper or [self.python]), "-m", "cerebelum", *args]
        log = self.logs / f"{name}.log"
        proc = Proc(name, cmd, log, process_env(self.s, self.root, **env), cwd=self.root)
        self.procs.append(proc)
        return proc

    def start_worker(self, wrapper: list[str] | None = None, **env: str) -> Proc:
        name = f"worker-{self._workers_started}"
        self._workers_started += 1
        proc = self._spawn(name, ["worker", "--app", APP], wrapper, **env)
        self.workers.append(proc)
        return proc

    def start_mirror(self, group: str | None = None, writers: int | None = None) -> Proc:
        args = ["mirror", "--no-migrate"]
        if group:
            args += ["--group", group]
        if writers:
            args += ["--writers", str(writers)]
        self.mirror = self._spawn("mirror", args)
        return self.mirror

    def wait_mirror_ready(self, timeout: float = 120.0) -> float:
        assert self.mirror is not None
        line, _ = self.mirror.wait_for(r"mirror: assigned \d+ partitions", timeout)
        return log_time(line) or time.monotonic()

    def wait_workers_ready(self, timeout: float = 180.0, stable_s: float = 1.0) -> float:
        """Until the live workers own all partitions between them, each having finished its
        latest assignment, and that has held for `stable_s` (a rebalance may still be coming)."""
        deadline = time.monotonic() + timeout
        since: float | None = None
        while time.monotonic() < deadline:
            live = [w for w in self.workers if w.popen.poll() is None]
            if len(live) < len(self.workers):
                dead = [w.name for w in self.workers if w.popen.poll() is not None]
                raise RuntimeError(f"worker(s) {dead} exited; see {self.logs}")
            if self._owning(live):
                since = since or time.monotonic()
                if time.monotonic() - since >= stable_s:
                    return since
            else:
                since = None
            time.sleep(POLL_S)
        raise TimeoutError(f"workers did not own all partitions within {timeout}s; see {self.logs}")

    @staticmethod
    def _owning(workers: list[Proc]) -> bool:
        """Each worker's last log line about its partitions says "owning" what it is assigned
        (assignments are incremental: "assigned" lines give the whole set after the change,
        "revoked" lines what was taken away)."""
        owned: list[set[int]] = []
        for w in workers:
            assigned: frozenset[int] = frozenset()
            last = None
            for line in w.lines():
                m = re.search(r"(assigned|revoked|owning) partitions (\S+)", line)
                if not m:
                    continue
                kind, parts = m.group(1), parse_ranges(m.group(2))
                if kind == "assigned":
                    assigned = parts
                elif kind == "revoked":
                    assigned -= parts
                last = (kind, parts)
            if last is None or last[0] != "owning" or last[1] != assigned or not assigned:
                return False
            owned.append(set(assigned))
        union = set().union(*owned) if owned else set()
        return union == set(range(PARTITIONS)) and sum(len(o) for o in owned) == PARTITIONS

    def tracked(self) -> list[Tracked]:
        out = [Tracked(w.name, w.pid) for w in self.workers if w.popen.poll() is None]
        if self.mirror is not None and self.mirror.popen.poll() is None:
            out.append(Tracked("mirror", self.mirror.pid))
        return out

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


class LoadGen:
    """`python -m bench.loadgen` as its own process (its CPU is then its own): it connects, says
    ready, produces on `go()`, reports, and stays alive until `close()` so its CPU can be read
    at the end of the measured window."""

    def __init__(self, s: Settings, n: int, workflow: str, prefix: str, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self._stderr = (log_dir / "loadgen.log").open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", "--n", str(n), "--workflow", workflow,
             "--prefix", prefix],
            cwd=ROOT, env=process_env(s), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True,
        )  # fmt: skip
        self._expect("ready")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _expect(self, word: str) -> str:
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line.startswith(word):
            raise RuntimeError(f"loadgen said {line!r}, expected {word!r}; see its log")
        return line[len(word) :].strip()

    def go(self) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write("go\n")
        self.popen.stdin.flush()

    async def result(self) -> dict[str, Any]:
        """Blocks (in a thread) until the loadgen has every start-command acknowledged."""
        line = await asyncio.to_thread(self._expect, "done")
        return json.loads(line)

    def close(self) -> None:
        assert self.popen.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.popen.stdin.close()
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
        self._stderr.close()
