"""Statistics over runs, the machine and code a result came from, writing JSON, and plotting."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bench.common.base import RESULTS, ROOT, say


def run_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def percentiles(
    values: list[float], ps: Iterable[float] = (50, 90, 95, 99, 99.9)
) -> dict[str, float]:
    """Linear-interpolated percentiles (numpy's default method), rounded to 0.01."""
    data = sorted(values)
    out: dict[str, float] = {}
    if not data:
        return out
    for p in ps:
        k = (len(data) - 1) * p / 100
        lo = int(k)
        hi = min(lo + 1, len(data) - 1)
        value = data[lo] + (data[hi] - data[lo]) * (k - lo)
        out[f"p{p:g}"] = round(value, 2)
    out["min"] = round(data[0], 2)
    out["max"] = round(data[-1], 2)
    out["mean"] = round(sum(data) / len(data), 2)
    return out


def median(values: list[float]) -> float:
    data = sorted(values)
    mid = len(data) // 2
    return data[mid] if len(data) % 2 else (data[mid - 1] + data[mid]) / 2


def spread(values: list[float]) -> dict[str, float]:
    """Median and range of repeated runs: how noisy the box was."""
    if not values:
        return {}
    m = median(values)
    return {
        "median": round(m, 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "range_pct_of_median": round(100 * (max(values) - min(values)) / m, 1) if m else 0.0,
    }


def machine() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total = 0
    with contextlib.suppress(OSError):
        mem_total = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": round(mem_total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "note": "one box: broker, PostgreSQL, workers, mirror and load generator share it "
        "(and other people's test runs may too: see other_programs_cpu_s)",
    }


def source_revision() -> str | None:
    """The checked-out commit, read from .git's files (no git command is run). In a worktree
    .git is a file naming the worktree's own git directory, whose `commondir` holds the refs."""
    git = ROOT / ".git"
    with contextlib.suppress(OSError):
        common = git
        if git.is_file():
            git = Path(git.read_text().strip().removeprefix("gitdir: "))
            common = (git / (git / "commondir").read_text().strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        for ref_file in (git / ref, common / ref):
            if ref_file.exists():
                return ref_file.read_text().strip()
        for line in (common / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    return None


def source_digest(root: Path = ROOT) -> str:
    """A hash of cerebelum/'s Python files: tells runs of different (uncommitted) code apart."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((root / "cerebelum").rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# The code the workers of this benchmark run is read when they start: note it at our start, and
# compare at the end (other people may be editing cerebelum/ while a benchmark runs).
SOURCE_AT_START = source_digest()
REVISION_AT_START = source_revision()


def write_result(name: str, doc: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    digest_end = source_digest()
    if digest_end != SOURCE_AT_START:
        say("warning: cerebelum/ changed while this benchmark ran; its runs may mix two versions")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{name}-{stamp}.json"
    doc = {
        "benchmark": name,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "revision": REVISION_AT_START,
        "cerebelum_source_digest": SOURCE_AT_START,
        "cerebelum_changed_during_run": digest_end != SOURCE_AT_START,
        "machine": machine(),
        **doc,
    }
    path.write_text(to_json(doc))
    say(f"wrote {path.relative_to(ROOT)}")
    return path


def to_json(doc: dict[str, Any]) -> str:
    """Indented JSON with lists of plain values on one line each (series stay readable, small)."""
    text = json.dumps(doc, indent=2)
    return _FLAT_LIST.sub(lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


_FLAT_LIST = re.compile(r"\[\s*\n([^\[\]{}]*?)\n\s*\]")


def latest_result(name: str) -> dict[str, Any] | None:
    paths = sorted(RESULTS.glob(f"{name}-[0-9]*.json"))
    return json.loads(paths[-1].read_text()) if paths else None


@contextlib.contextmanager
def plotting() -> Iterator[Any]:
    """matplotlib's pyplot with a file-only backend, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed: no plot (pip install matplotlib)")
        yield None
        return
    try:
        yield plt
    finally:
        plt.close("all")
