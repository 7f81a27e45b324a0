"""Runner for the faust spike: throughput and kill test, Cerebelum's aiokafka worker vs faust.

Run with the project's venv (the driver and the admin calls use its aiokafka); faust runs from
its own venv (--faust-python). Everything points at a private broker (default 127.0.0.1:29092),
never at the shared one.

    .venv/bin/python bench/faust_spike/run.py throughput --engine cerebelum --runs 3 -n 20000
    .venv/bin/python bench/faust_spike/run.py throughput --engine faust-loop --runs 3 -n 5000
    .venv/bin/python bench/faust_spike/run.py kill --engine cerebelum -n 5000

Each run starts from fresh topics (deleted and recreated) and fresh workers, so no run restores
another's state. Results go to bench/faust_spike/results/<engine>-<kind>-<i>.json, and a
summary (median and all runs) is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV_PY = REPO / ".venv" / "bin" / "python"
CEREBELUM_BIN = REPO / ".venv" / "bin" / "cerebelum"
RESULTS = HERE / "results"

CEREBELUM_TOPICS = ["cerebelum.commands", "cerebelum.events", "cerebelum.state", "cerebelum.dlq"]
FAUST_TOPICS = [
    "spike.commands",
    "spike.events",
    "spike-faust-executions-changelog",
    "spike-faust-__assignor-__leader",
]


# -- topics --------------------------------------------------------------------------------


async def _existing(admin: AIOKafkaAdminClient) -> set[str]:
    return set(await admin.list_topics())


async def _delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        present = [n for n in names if n in await _existing(admin)]
        if present:
            await admin.delete_topics(present)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not set(names) & await _existing(admin):
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"topics not deleted: {set(names) & await _existing(admin)}")
    finally:
        await admin.close()


async def _create_topics(bootstrap: str, names: list[str], partitions: int = 64) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            described = await admin.describe_topics(names)
            if all(len(t.get("partitions", [])) == partitions for t in described):
                return
            await asyncio.sleep(0.3)
        raise RuntimeError(f"topics {names} not ready")
    finally:
        await admin.close()


def reset_topics(engine: str, bootstrap: str) -> None:
    if engine == "cerebelum":
        asyncio.run(_delete_topics(bootstrap, CEREBELUM_TOPICS))
        env = {**os.environ, "CEREBELUM_KAFKA": bootstrap}
        # `cerebelum topics apply` on freshly deleted/created topics can report "was not created
        # as declared" once (metadata not yet propagated); it is idempotent, so retry.
        for attempt in range(5):
            out = subprocess.run(
                [str(CEREBELUM_BIN), "topics", "apply"], cwd=REPO, env=env,
                capture_output=True, text=True,
            )
            if out.returncode == 0:
                break
            print(f"  topics apply attempt {attempt + 1}: {out.stdout.strip()}", flush=True)
            time.sleep(1)
        else:
            raise RuntimeError("cerebelum topics apply kept failing")
    else:
        asyncio.run(_delete_topics(bootstrap, FAUST_TOPICS))
        # spike.commands/spike.events are ours; faust declares its changelog and leader topics.
        asyncio.run(_create_topics(bootstrap, ["spike.commands", "spike.events"]))


# -- workers -------------------------------------------------------------------------------


class Workers:
    def __init__(self, engine: str, count: int, args: argparse.Namespace, tag: str) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        logs = Path(args.log_dir)
        logs.mkdir(parents=True, exist_ok=True)
        for i in range(1, count + 1):
            log = logs / f"{tag}-w{i}.log"
            self.logs.append(log)
            if engine == "cerebelum":
                cmd = [str(CEREBELUM_BIN), "worker", "--app", "tests.apps"]
                env = {
                    **os.environ,
                    "CEREBELUM_KAFKA": args.bootstrap,
                    "CEREBELUM_SESSION_TIMEOUT_MS": "6000",
                    "CEREBELUM_HEARTBEAT_INTERVAL_MS": "1000",
                }
                cwd = REPO
            else:
                datadir = Path(args.faust_datadir) / f"{tag}-w{i}"
                shutil.rmtree(datadir, ignore_errors=True)
                cmd = [args.faust_python, str(HERE / "faust_w3.py"), "worker", "-l", "info"]
                env = {
                    **os.environ,
                    "SPIKE_KAFKA": args.bootstrap,
                    "SPIKE_WORKER_ID": str(i),
                    "SPIKE_FAUST_MODE": engine.removeprefix("faust-"),
                    "SPIKE_FAUST_DATADIR": str(datadir),
                }
                cwd = HERE
            with log.open("wb") as out:
                self.procs.append(
                    subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
                )
            time.sleep(args.stagger)

    def wait_ready(self, marker: str, timeout: float = 120.0, settle: float = 3.0) -> float:
        """Wait until every worker's log shows `marker` (it owns partitions), then settle.

        (aiokafka 0.14's describe_consumer_groups fails to decode Kafka 4.1's answer, so the
        group's state is read from the workers' own logs instead.)
        """
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if all(marker in log.read_text(errors="replace") for log in self.logs):
                time.sleep(settle)
                return time.monotonic() - started
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a worker exited early; see {self.logs}")
            time.sleep(0.5)
        raise RuntimeError(f"workers not ready after {timeout}s; see {self.logs}")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self, timeout: float = 30.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()  # only our own child, by its pid
                p.wait()


# -- one run ---------------------------------------------------------------------------------


def topics_for(engine: str) -> tuple[str, str]:
    if engine == "cerebelum":
        return "cerebelum.commands", "cerebelum.events"
    return "spike.commands", "spike.events"


def broker_pid(args: argparse.Namespace) -> int | None:
    try:
        return int(Path(args.broker_pid_file).read_text().strip())
    except (OSError, ValueError):
        return None


def one_run(engine: str, kind: str, i: int, n: int, args: argparse.Namespace) -> dict[str, Any]:
    tag = f"{engine}-{kind}-{i}"
    print(f"== {tag}: n={n}", flush=True)
    reset_topics(engine, args.bootstrap)
    workers = Workers(engine, 2 if kind == "kill" else 1, args, tag)
    commands, events = topics_for(engine)
    out = RESULTS / f"{tag}.json"
    out.unlink(missing_ok=True)
    cmd = [
        str(VENV_PY), str(HERE / "driver.py"),
        "--label", engine, "--run-id", f"{tag}-{int(time.time())}",
        "--bootstrap", args.bootstrap, "--commands", commands, "--events", events,
        "-n", str(n), "--timeout", str(args.timeout), "--warmup-timeout", str(args.warmup_timeout),
        "--out", str(out),
    ]
    for w, pid in enumerate(workers.pids, 1):
        cmd += ["--cpu", f"{pid}:worker{w}"]
    bpid = broker_pid(args)
    if bpid:
        cmd += ["--cpu", f"{bpid}:broker"]
    if kind == "kill":
        cmd += ["--kill-pid", str(workers.pids[0]), "--kill-at", str(1 / 3), "--linger", "10"]
    started = time.monotonic()
    try:
        ready_s = workers.wait_ready(READY_MARKER["cerebelum" if engine == "cerebelum" else "faust"])
        subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
    finally:
        workers.stop()
    result = json.loads(out.read_text()) if out.exists() else {"error": "driver wrote nothing"}
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["workers_ready_s"] = round(ready_s, 1)
    result["worker_logs"] = [str(p) for p in workers.logs]
    result["log_findings"] = scan_logs(workers.logs)
    out.write_text(json.dumps(result, indent=2) + "\n")
    brief = {k: result.get(k) for k in (
        "executions_per_s", "elapsed_s", "completed", "missing", "duplicate_completions",
        "duplicate_step_results", "duplicate_versions", "wrong_output", "cpu_s", "error")}
    print(f"   {json.dumps(brief)}", flush=True)
    if "kill" in result:
        print(f"   kill: {json.dumps(result['kill'])}", flush=True)
    return result


READY_MARKER = {"cerebelum": "owning partitions", "faust": "Worker ready"}

# Log lines worth counting: faust's swallowed transaction/recovery errors, fencing, retries.
PATTERNS = [
    "spike-skip",
    "spike-gap",
    "Aborted tx until highwater",
    "Exception in begin_transaction",
    "Exception in commit_transaction",
    "Exception in abort_transaction",
    "Commit invoked for unknown transaction",
    "fenced",
    "ProducerFenced",
    "Error in recovery",
    "Timer commit is overlapping",
    "NotEnoughReplicas",
    "transaction failed",
    "Traceback",
    "CRITICAL",
    "ERROR",
]


def scan_logs(logs: list[Path]) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    for log in logs:
        counts: dict[str, int] = {}
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            for pat in PATTERNS:
                if pat in line:
                    counts[pat] = counts.get(pat, 0) + 1
        found[log.name] = counts
    return found


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["executions_per_s"] for r in results if r.get("executions_per_s")]
    cpu_per_k: list[float] = []
    for r in results:
        cpu = r.get("cpu_s") or {}
        workers = sum(v for k, v in cpu.items() if k.startswith("worker") and v is not None)
        if r.get("completed"):
            cpu_per_k.append(round(1000 * workers / r["completed"], 3))
    return {
        "runs": rates,
        "median_executions_per_s": statistics.median(rates) if rates else None,
        "worker_cpu_s_per_1000": cpu_per_k,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["throughput", "kill"])
    p.add_argument("--engine", required=True, choices=["cerebelum", "faust-loop", "faust-inline"])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("-n", type=int, default=20_000)
    p.add_argument("--first-index", type=int, default=1)
    p.add_argument("--bootstrap", default="127.0.0.1:29092")
    p.add_argument("--broker-pid-file", default="/tmp/spike/.dev/kafka/kafka.pid")
    p.add_argument("--faust-python", default="/tmp/spike/venv-faust/bin/python")
    p.add_argument("--faust-datadir", default="/tmp/spike/faust-data")
    p.add_argument("--log-dir", default="/tmp/spike/logs")
    p.add_argument("--timeout", type=float, default=400.0)
    p.add_argument("--warmup-timeout", type=float, default=180.0)
    p.add_argument("--stagger", type=float, default=1.0, help="seconds between worker starts")
    args = p.parse_args()
    if args.bootstrap.endswith(":19092"):
        sys.exit("refusing to run against the shared broker on 19092")
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = [
        one_run(args.engine, args.kind, i, args.n, args)
        for i in range(args.first_index, args.first_index + args.runs)
    ]
    if args.kind == "throughput":
        print(json.dumps({"engine": args.engine, "n": args.n, **summarise(results)}), flush=True)


if __name__ == "__main__":
    main()
