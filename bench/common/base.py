"""Where results go, polling and clock conventions, and the two helpers every module uses."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from cerebelum.config import Settings

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
LOGS = RESULTS / "logs"
PROFILES = RESULTS / "profiles"
APP = "bench.app"
# bench/diag/sitecustomize.py first on a worker's path: diagnostics chosen by BENCH_* variables.
DIAG_PYTHONPATH = f"{ROOT / 'bench' / 'diag'}:{ROOT}"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Polling the probes this often resolves completion times to ~1/20 s of runs that last tens of
# seconds, while costing the measured processes well under 1% of a core.
POLL_S = 0.05
# Wall clock minus monotonic clock: turns log timestamps and Kafka record timestamps (epoch)
# into the monotonic timeline every measurement here uses (CLOCK_MONOTONIC is system-wide).
WALL_MINUS_MONO = time.time() - time.monotonic()


def settings() -> Settings:
    return Settings.from_env()


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
