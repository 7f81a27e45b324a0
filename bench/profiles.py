"""Profiling the worker under load: py-spy attached from outside, or pyinstrument around it.

Both write speedscope JSON (open it at https://www.speedscope.app or with `speedscope FILE`);
`hot_spots` reads such a file back and ranks functions by self time (samples in which the function
itself was on top of the stack) and by total time (samples in which it was anywhere on it).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# 100 Hz, py-spy's default: over a 20 s window 2,000 samples per thread, enough to rank the top
# functions, while pausing the worker for well under 1% of its time.
RATE_HZ = 100


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


class PySpy:
    """`py-spy record` attached to a running process until `stop()`."""

    def __init__(self, pid: int, out: Path) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.log = out.with_suffix(".log")
        with self.log.open("wb") as log:
            self.popen = subprocess.Popen(
                [py_spy(), "record", "--pid", str(pid), "--rate", str(RATE_HZ),
                 "--format", "speedscope", "--output", str(out)],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> Path:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            try:
                self.popen.wait(60)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.out


def pyinstrument_wrapper(out: Path) -> list[str]:
    """The command prefix that runs `-m cerebelum worker ...` under pyinstrument."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "pyinstrument", "--renderer", "speedscope", "--outfile", str(out)]


def hot_spots(path: Path, top: int = 25) -> dict[str, Any]:
    """Functions ranked by self and total samples, and self samples by package, from speedscope."""
    doc = json.loads(path.read_text())
    frames = doc["shared"]["frames"]
    self_w: Counter[int] = Counter()
    total_w: Counter[int] = Counter()
    grand = 0.0
    for profile in doc["profiles"]:
        if profile.get("type") == "sampled":
            weights = profile.get("weights") or [1] * len(profile["samples"])
            stacks = zip(profile["samples"], weights, strict=True)
        else:  # evented (pyinstrument): rebuild self time from open/close events
            stacks = _evented_stacks(profile)
        for stack, weight in stacks:
            if not stack:
                continue
            grand += weight
            self_w[stack[-1]] += weight
            for index in set(stack):
                total_w[index] += weight

    def label(i: int) -> str:
        f = frames[i]
        where = f.get("file") or ""
        short = where.split("site-packages/")[-1].split("/work/main/")[-1]
        line = f.get("line")
        return f"{f.get('name')} ({short}{':' + str(line) if line else ''})"

    def package(i: int) -> str:
        where = frames[i].get("file") or ""
        if "site-packages/" in where:
            return where.split("site-packages/")[1].split("/")[0]
        if "/work/main/" in where:
            parts = where.split("/work/main/")[1].split("/")
            return "/".join(parts[:2]) if parts[0] == "cerebelum" else parts[0]
        if "/lib/python3" in where:
            return "stdlib:" + where.split("/lib/python3")[1].split("/")[1].removesuffix(".py")
        return where or "?"

    by_package: Counter[str] = Counter()
    for i, w in self_w.items():
        by_package[package(i)] += w

    def pct(w: float) -> float:
        return round(100 * w / grand, 1) if grand else 0.0

    return {
        "file": str(path),
        "weight_total": grand,  # seconds for py-spy, ms for pyinstrument
        "self": [{"function": label(i), "pct": pct(w)} for i, w in self_w.most_common(top)],
        "total": [{"function": label(i), "pct": pct(w)} for i, w in total_w.most_common(top)],
        "self_by_package": [{"package": k, "pct": pct(w)} for k, w in by_package.most_common(15)],
    }


def _evented_stacks(profile: dict[str, Any]) -> list[tuple[list[int], float]]:
    out: list[tuple[list[int], float]] = []
    stack: list[int] = []
    last = profile.get("startValue", 0)
    for event in profile.get("events", []):
        at = event["at"]
        if stack and at > last:
            out.append((list(stack), at - last))
        last = at
        if event["type"] == "O":
            stack.append(event["frame"])
        elif stack:
            stack.pop()
    return out


if __name__ == "__main__":
    print(json.dumps(hot_spots(Path(sys.argv[1])), indent=2))
