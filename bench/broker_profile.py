"""Where the broker's CPU goes: a JFR recording of the broker under whatever load runs meanwhile.

    python -m bench.broker_profile --seconds 60            (while e.g. bench.compare runs a rate)
    python -m bench.broker_profile --file recording.jfr    (a recording made before)

Finds the broker listening on CEREBELUM_KAFKA's port, starts a JFR recording in it (`jcmd PID
JFR.start settings=profile`: method samples every 10-20 ms per running thread, ~1-2 % of its CPU),
waits, and reads the samples back (`jfr print --json`, with deep stacks: Kafka's are 60-100
frames). Each sample is charged to the request kind whose handler is on its stack
(`KafkaApis.handleProduceRequest`, ...), else to the purgatory's deferred completions
(`ReplicaManager.tryCompleteActions`: delayed fetches and produces completed after an append),
else to its thread (network threads, the transaction marker sender, the group coordinator, the
KRaft controller). Also: the share of samples with given frames anywhere on the stack
(`DelayedFetch.tryComplete`: a waiting fetch re-checked after an append to one of its
partitions, which walks every partition of that fetch).

Writes bench/results/broker-profile-<time>.json. Needs a JDK's `jcmd` and `jfr` (Java 17+).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.common.base import say, settings
from bench.common.procfs import pid_listening_on, port_of
from bench.common.results import machine, source_revision, write_result

# A frame naming the request a sample serves; the outermost one wins.
_HANDLER = re.compile(r"^KafkaApis\.(handle\w+)$")
# Deferred work after appends (delayed fetches/produces completed), when no handler is above.
_DEFERRED = "ReplicaManager.tryCompleteActions"
# Frames whose presence anywhere on a stack is counted on its own (shares overlap).
ANYWHERE = {
    "delayed fetch re-checked (DelayedFetch.tryComplete)": ("DelayedFetch.tryComplete",
                                                            "DelayedFetch.$anonfun$tryComplete"),
    "delayed fetch answered (DelayedFetch.onComplete)": ("DelayedFetch.onComplete",
                                                         "DelayedFetch.$anonfun$onComplete"),
    "log append (UnifiedLog.append)": ("UnifiedLog.append",),
    "response encoding (SendBuilder)": ("SendBuilder.",),
    "request metrics (yammer)": ("Meter.", "Histogram.", "ExponentiallyDecayingSample."),
}  # fmt: skip


def frames(sample: dict[str, Any]) -> list[str]:
    """`Class.method` of each frame, innermost first."""
    stack = sample["values"].get("stackTrace") or {}
    return [
        f"{f['method']['type']['name'].rsplit('/', 1)[-1]}.{f['method']['name']}"
        for f in stack.get("frames", [])
    ]


def thread_of(sample: dict[str, Any]) -> str:
    name = (sample["values"].get("sampledThread") or {}).get("javaName") or "?"
    return re.sub(r"[-\d]+$", "", name)  # request-handler-3 -> request-handler


def charge(stack: list[str], thread: str) -> str:
    for name in reversed(stack):  # outermost first
        m = _HANDLER.match(name)
        if m and m.group(1) != "handle":
            return f"request {m.group(1).removeprefix('handle').removesuffix('Request')}"
    if _DEFERRED in stack:
        return "deferred completions after appends (tryCompleteActions)"
    return f"thread {thread}"


def breakdown(samples: Iterable[dict[str, Any]]) -> dict[str, Any]:
    by_charge: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    n = 0
    for sample in samples:
        n += 1
        stack = frames(sample)
        by_charge[charge(stack, thread_of(sample))] += 1
        for label, prefixes in ANYWHERE.items():
            if any(frame.startswith(prefixes) for frame in stack):
                anywhere[label] += 1
    share = lambda c: {k: round(v / n, 4) for k, v in c.most_common()}  # noqa: E731
    return {"samples": n, "by_request": share(by_charge), "anywhere": share(anywhere)}


def record(pid: int, seconds: float, path: Path) -> None:
    name = f"bench-{os.getpid()}"
    run = ["jcmd", str(pid), "JFR.start", f"name={name}", "settings=profile",
           f"duration={int(seconds)}s", f"filename={path}"]  # fmt: skip
    subprocess.run(run, check=True, capture_output=True)
    say(f"recording the broker (pid {pid}) for {seconds:.0f} s")
    deadline = time.monotonic() + seconds + 2
    while time.monotonic() < deadline or not path.exists():
        time.sleep(1)
        if time.monotonic() > deadline + 30:
            raise SystemExit(f"no recording at {path} after {seconds + 30:.0f} s")
    time.sleep(1)  # the file is written when the recording stops


def read_samples(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["jfr", "print", "--json", "--stack-depth", "200", "--events", "jdk.ExecutionSample",
         str(path)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return list(json.loads(out.stdout)["recording"]["events"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="how long to record")
    parser.add_argument("--file", type=Path, help="read this recording instead of making one")
    parser.add_argument("--label", default="", help="what load ran meanwhile (kept in the JSON)")
    args = parser.parse_args()
    path = args.file
    if path is None:
        port = port_of(settings().kafka_bootstrap)
        pid = pid_listening_on(port)
        if pid is None:
            raise SystemExit(f"no process listens on port {port} (CEREBELUM_KAFKA)")
        path = Path(tempfile.mkdtemp(prefix="broker-jfr-")) / "broker.jfr"
        record(pid, args.seconds, path)
    result = breakdown(read_samples(path))
    for section in ("by_request", "anywhere"):
        say(section)
        for label, share in result[section].items():
            say(f"  {share:6.1%}  {label}")
    doc = {"label": args.label, "recording": str(path), "seconds": args.seconds,
           "revision": source_revision(), "machine": machine(), **result}  # fmt: skip
    say(f"wrote {write_result('broker-profile', doc)}")


if __name__ == "__main__":
    main()
