"""Faults of the infrastructure under load: a broker of three killed, the only broker restarted,
PostgreSQL stopped. Each test runs on services of its own, started here on free ports (never
the session's shared broker or database), with a worker, the mirror and (where it matters) the
API as subprocesses, and a Client producing start-commands at a steady rate.

1. Three brokers (RF 3, min ISR 2): kill -9 one; completions keep arriving while it is down;
   restarted, it catches up (every ISR back to 3); every execution completes exactly once.
2. One broker, stopped (kill -9) and restarted under load: the worker, the mirror, the API and
   the Client reconnect by themselves; the time from the broker's return to the first new
   completion is measured, printed and written to .dev/test-logs/fault-figures.json.
3. PostgreSQL stopped for 30 s (CEREBELUM_FAULT_PG_OUTAGE_S) under load: the worker is
   unaffected, the API answers 503 with a JSON error meanwhile and 200 after, and the mirror
   catches up (every execution in PostgreSQL, once).

Each test ends with `cerebelum verify` (Kafka and PostgreSQL) on its own data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from cerebelum.client import Client
from cerebelum.config import Settings
from cerebelum.constants import DEFAULT_NAMES, DEFAULT_NAMESPACE
from cerebelum.db.migrate import migrate
from cerebelum.dev import cluster, kafka, postgres
from tests.conftest import LOGS, ROOT, Processes, process_env
from tests.helpers import (
    API_HEADERS,
    api_settings,
    assert_gapless,
    end_offsets,
    events_since,
    free_port,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault]

# How long the single broker stays down, and PostgreSQL: the figures by default,
# shorter for a quick local run.
BROKER_DOWN_S = float(os.environ.get("CEREBELUM_FAULT_BROKER_DOWN_S", "15"))
PG_OUTAGE_S = float(os.environ.get("CEREBELUM_FAULT_PG_OUTAGE_S", "30"))
# Starts per second: enough that a stall shows within a second, little enough for 2 shared cores.
RATE = 20
# Any one execution, faults included, ends within this (a generous bound: the figures are
# measured and reported, not asserted tightly).
WAIT_S = 150
# The time to resume after a broker's return must stay under this; we measured it (see
# docs/decisions.md) at a few seconds.
RESUME_BOUND_S = 30
FIGURES = LOGS / "fault-figures.json"


def record(name: str, figures: dict[str, Any]) -> None:
    """Print the figures with a label (visible with -s) and keep them in FIGURES."""
    print(f"\n[fault figures] {name}: {json.dumps(figures)}")
    LOGS.mkdir(parents=True, exist_ok=True)
    try:
        known = json.loads(FIGURES.read_text())
    except (OSError, ValueError):
        known = {}
    known[name] = {**figures, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    FIGURES.write_text(json.dumps(known, indent=2) + "\n")


# -- services of the module's own ---------------------------------------------------------


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[postgres.PostgresLayout]:
    """A PostgreSQL server of this module's own, on a free port; removed at the end."""
    home = ROOT / ".dev" / "faults" / f"pg-{uuid.uuid4().hex[:8]}"
    layout = postgres.PostgresLayout(home, port=free_port())
    postgres.start(layout)
    try:
        yield layout
    finally:
        if postgres.server_pid(layout) is not None:
            postgres.stop(layout)
        shutil.rmtree(home, ignore_errors=True)


async def new_database(layout: postgres.PostgresLayout, name: str) -> str:
    """A new, migrated database on `layout`'s server; its URL."""
    admin = await asyncpg.connect(f"postgresql://cerebelum@127.0.0.1:{layout.port}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = f"postgresql://cerebelum@127.0.0.1:{layout.port}/{name}"
    await migrate(url)
    return url


def keep_logs(state: Path) -> None:
    """Copy the brokers' server.log files to LOGS (the data goes, the logs explain a failure)."""
    for log in state.glob("**/logs/server.log"):
        name = "-".join(log.relative_to(state).parts[:-2]) or "broker"
        shutil.copy(log, LOGS / f"fault-{state.name}-{name}-server.log")


@pytest.fixture(scope="module")
def three_brokers() -> Iterator[cluster.Cluster]:
    state = ROOT / ".dev" / "faults" / f"cluster-{uuid.uuid4().hex[:8]}"
    nodes = cluster.Cluster(ROOT, state, tuple((free_port(), free_port()) for _ in range(3)))
    try:
        cluster.start(nodes)
        yield nodes
    finally:
        cluster.stop(nodes)
        keep_logs(state)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def one_broker() -> Iterator[kafka.KafkaLayout]:
    state = ROOT / ".dev" / "faults" / f"broker-{uuid.uuid4().hex[:8]}"
    layout = kafka.KafkaLayout(
        ROOT, port=free_port(), controller_port=free_port(), state=state, heap="512m"
    )
    try:
        kafka.start(layout)
        yield layout
    finally:
        kafka.stop(layout)
        keep_logs(state)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
async def single_rig_settings(
    settings: Settings, one_broker: kafka.KafkaLayout, own_postgres: postgres.PostgresLayout
) -> Settings:
    """Settings for the one-broker tests: its broker, a database of its own."""
    from cerebelum.admin.topics import apply_topics, load_declarations

    await apply_topics(one_broker.bootstrap, load_declarations())
    url = await new_database(own_postgres, "single")
    # Its own broker and database: the default namespace, as `topics apply` made them here.
    return replace(
        settings,
        namespace=DEFAULT_NAMESPACE,
        kafka_bootstrap=one_broker.bootstrap,
        database_url=url,
    )


# -- the load ------------------------------------------------------------------------------


@dataclass
class Load:
    """Start-commands at a steady rate, and when each result came back to the Client."""

    client: Client
    prefix: str
    acked: dict[str, int] = field(default_factory=dict)  # id -> n, once Kafka acknowledged it
    acked_at: dict[str, float] = field(default_factory=dict)
    unacked: set[str] = field(default_factory=set)  # the acknowledgement failed (broker away)
    results: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    completed_at: dict[str, float] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def in_flight(self) -> int:
        return len(self.acked) - len(self.completed_at)

    def completions_between(self, start: float, end: float) -> int:
        return sum(start <= t < end for t in self.completed_at.values())

    def first_new_completion(self, moment: float) -> float | None:
        """When the first execution acknowledged after `moment` completed (None: none yet)."""
        done = [t for e, t in self.completed_at.items() if self.acked_at[e] > moment]
        return min(done) if done else None

    def first_completion_after(self, moment: float) -> float | None:
        later = [t for t in self.completed_at.values() if t >= moment]
        return min(later) if later else None

    async def run(self) -> None:
        """RATE/10 starts every 0.1 s until `stop`, each acknowledged on its own: a start held
        up by a partition whose leader is away does not hold up those of other partitions."""
        i = 0
        burst = max(1, RATE // 10)
        pending: set[asyncio.Task[None]] = set()
        while not self.stop.is_set():
            tick = time.monotonic()
            for k in range(burst):
                task = asyncio.ensure_future(self._start(i + k))
                pending.add(task)
                task.add_done_callback(pending.discard)
            i += burst
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
        if pending:
            await asyncio.wait(pending)

    async def _start(self, n: int) -> None:
        eid = f"{self.prefix}-{n}"
        try:
            ack = await self.client.start_nowait(*plan(n), eid)
            await ack
        except Exception:  # noqa: BLE001 - not acknowledged in time: it may or may not run
            self.unacked.add(eid)
            return
        self.acked[eid] = n
        self.acked_at[eid] = time.time()
        waiter = asyncio.ensure_future(self.client.wait(eid, timeout=WAIT_S))
        waiter.add_done_callback(lambda f: self._done(eid, f))
        self.results[eid] = waiter

    def _done(self, eid: str, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.completed_at[eid] = time.time()

    async def finish(self, producing: asyncio.Future[None]) -> list[Any]:
        """Stop starting, wait for the last acknowledgements, then for every result."""
        self.stop.set()
        await producing
        return await asyncio.gather(*self.results.values())


def plan(n: int) -> tuple[str, dict[str, Any]]:
    """Three quick steps, or three steps of 0.1 s (one in the thread pool), one in two."""
    return ("w3", {"n": n}) if n % 2 else ("slow", {"n": n, "pause": 0.1})


def expected(n: int) -> Any:
    return {"n": (n + 1) * 2} if n % 2 else {"c": (n + 1) * 10}


@dataclass
class Rig:
    settings: Settings
    processes: Processes
    client: Client
    load: Load
    since: dict[Any, int]
    started: float
    api_port: int | None = None

    async def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10, headers=API_HEADERS) as http:
            return await http.request(method, f"http://127.0.0.1:{self.api_port}{path}", **kw)


@contextlib.asynccontextmanager
async def rig(
    settings: Settings, name: str, tmp: Path, with_api: bool = False
) -> AsyncIterator[Rig]:
    """A worker and the mirror (and the API) on `settings`, a listening Client, and a Load not
    yet running; one execution has completed through them before the test gets the rig."""
    processes = Processes(settings, name)
    try:
        processes.worker()
        processes.mirror()
        api_port = None
        if with_api:
            api_port = free_port()
            tokens = api_settings(tmp).tokens_file
            assert tokens is not None
            processes.spawn("api", "--port", str(api_port), CEREBELUM_API_TOKENS_FILE=tokens)
        since = await end_offsets(settings)
        started = time.time()
        # 60 s per acknowledgement: a fresh cluster on a busy box takes seconds to seat the
        # new partitions' leaders (NotLeaderForPartition meanwhile), and the load waits out
        # the broker outages rather than giving up on the starts.
        async with Client(settings, timeout=60) as client:
            await client.listen()
            prefix = f"{name}-{uuid.uuid4().hex[:8]}"
            first = await client.run("w3", {"n": 1}, f"{prefix}-warmup", timeout=120)
            assert first.status == "completed"
            yield Rig(settings, processes, client, Load(client, prefix), since, started, api_port)
    finally:
        processes.stop_all()


async def until(check: Any, timeout: float, what: str, every: float = 0.2) -> float:
    """Poll the coroutine function `check` until it returns true; the time it took."""
    began = time.monotonic()
    while not await check():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what} within {timeout:.0f} s")
        await asyncio.sleep(every)
    return time.monotonic() - began


async def check_exactly_once(rig: Rig, producing: asyncio.Future[None]) -> dict[str, int]:
    """Every acknowledged start completed once with its output, its history gapless and each
    step answered once; the mirror holds each execution, completed, with the same events; an
    unacknowledged start (the broker was away) ran at most once if it reached Kafka at all."""
    load = rig.load
    results = await load.finish(producing)
    for eid, result in zip(load.results, results, strict=True):
        assert result.status == "completed", result
        assert result.output == expected(load.acked[eid]), result
    history = await events_since(rig.settings, rig.since, set(load.acked) | load.unacked)
    for eid, events in history.items():
        if eid in load.unacked and not events:
            continue
        assert events, f"{eid}: no events"
        assert_gapless(events)
        ends = [e for e in events if e["type"] == "ExecutionCompleted"]
        assert len(ends) == 1 or (eid in load.unacked and not ends), (eid, events)
        steps = [e["step"] for e in events if e["type"] == "StepCompleted"]
        assert len(steps) == len(set(steps)), (eid, steps)
    # The mirror: every execution that reached Kafka, completed, with as many events.
    ids = [eid for eid, events in history.items() if events]
    db = await asyncpg.connect(rig.settings.database_url)
    try:

        async def mirrored() -> bool:
            done = await db.fetchval(
                "SELECT count(*) FROM executions WHERE execution_id = ANY($1) "
                "AND status = 'completed'",
                ids,
            )
            return bool(done == len(ids))

        await until(mirrored, 90, "the mirror did not record every execution as completed")
        rows = await db.fetch(
            "SELECT execution_id, count(*) AS n FROM events WHERE execution_id = ANY($1) "
            "GROUP BY execution_id",
            ids,
        )
    finally:
        await db.close()
    in_db = {r["execution_id"]: r["n"] for r in rows}
    assert in_db == {eid: len(history[eid]) for eid in ids}
    return {"acknowledged": len(load.acked), "unacknowledged": len(load.unacked),
            "unacknowledged_that_ran": sum(1 for e in load.unacked if history[e])}  # fmt: skip


def verify(rig: Rig) -> str:
    """`cerebelum verify` over this rig's Kafka and PostgreSQL since it started; its verdict."""
    done = subprocess.run(
        [sys.executable, "-m", "cerebelum", "verify", "--quiet", "--since-ms",
         str(int(rig.started * 1000))],
        cwd=ROOT, env=process_env(rig.settings), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "(no output)"


# -- 1. three brokers, one killed ------------------------------------------------------------

# The killed broker stays down until executions started after the kill complete (at most
# this long), then STEADY_S more: the cluster must work on without it, not just survive it.
RECOVERY_BOUND_S = 90
STEADY_S = 5
INTERNAL_TOPICS = ["__consumer_offsets", "__transaction_state"]
OUR_TOPICS = [
    DEFAULT_NAMES.commands,
    DEFAULT_NAMES.events,
    DEFAULT_NAMES.state,
    DEFAULT_NAMES.workflows,
]


def group_coordinator(bootstrap: str) -> int | None:
    """The broker coordinating the workers' group (the most disruptive one to kill)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        (future,) = admin.describe_consumer_groups([DEFAULT_NAMES.worker_group]).values()
        node_id: int = future.result(timeout=10).coordinator.id
        return node_id
    except Exception:  # noqa: BLE001 - any failure: kill another broker instead
        return None


async def test_three_brokers_one_killed_under_load(
    settings: Settings,
    three_brokers: cluster.Cluster,
    own_postgres: postgres.PostgresLayout,
    tmp_path: Path,
) -> None:
    from cerebelum.admin.topics import apply_topics, load_declarations

    bootstrap = three_brokers.bootstrap
    await apply_topics(bootstrap, load_declarations(), replication_factor=3)
    url = await new_database(own_postgres, "three")
    cluster_settings = replace(
        settings, namespace=DEFAULT_NAMESPACE, kafka_bootstrap=bootstrap, database_url=url
    )

    async with rig(cluster_settings, "three-brokers", tmp_path) as r:
        # Every topic, ours and the internal ones, replicated on all three, min ISR 2.
        assert cluster.under_replicated(bootstrap, OUR_TOPICS + INTERNAL_TOPICS, 3) == {}
        victim = group_coordinator(bootstrap) or 2
        producing = asyncio.ensure_future(r.load.run())
        await asyncio.sleep(4)
        in_flight = r.load.in_flight()
        killed_at = time.time()
        cluster.kill_node(three_brokers, victim)

        async def going_on() -> bool:
            return r.load.first_new_completion(killed_at + 1) is not None

        await until(going_on, RECOVERY_BOUND_S, "no execution started after the kill completed")
        recovered = r.load.first_new_completion(killed_at + 1)
        assert recovered is not None
        await asyncio.sleep(STEADY_S)
        back_at = time.time()
        # ...and went on: completions in the last seconds before it came back.
        late = r.load.completions_between(back_at - STEADY_S, back_at)
        assert late > 0, f"no completion in the last {STEADY_S} s of the outage"
        while_down = r.load.completions_between(killed_at, back_at)
        first_after_kill = r.load.first_completion_after(killed_at)
        await asyncio.to_thread(cluster.start_node, three_brokers, victim)
        restarted_s = time.time() - back_at

        def caught_up() -> bool:
            return not cluster.under_replicated(bootstrap, OUR_TOPICS + INTERNAL_TOPICS, 3)

        async def isr_full() -> bool:
            return await asyncio.to_thread(caught_up)

        isr_s = await until(isr_full, 120, "the restarted broker did not rejoin every ISR")
        await asyncio.sleep(2)  # load on the full cluster again
        figures = await check_exactly_once(r, producing)
        verdict = verify(r)

    record(
        "three_brokers_kill_one",
        {
            "killed_broker": victim,
            "in_flight_at_kill": in_flight,
            "down_s": round(back_at - killed_at, 1),
            "completions_while_down": while_down,
            "recovery_s": round(recovered - killed_at, 2),
            "first_completion_after_kill_s": round(first_after_kill - killed_at, 2)
            if first_after_kill
            else None,
            "completions_in_last_5s_down": late,
            "restart_s": round(restarted_s, 1),
            "isr_back_to_3_after_restart_s": round(restarted_s + isr_s, 1),
            **figures,
            "verify": verdict,
        },
    )


# -- 2. the only broker restarted --------------------------------------------------------------


async def test_single_broker_restart_under_load(
    single_rig_settings: Settings, one_broker: kafka.KafkaLayout, tmp_path: Path
) -> None:
    async with rig(single_rig_settings, "broker-restart", tmp_path, with_api=True) as r:
        assert (await r.api("GET", "/readyz")).status_code == 200
        producing = asyncio.ensure_future(r.load.run())
        await asyncio.sleep(4)
        in_flight = r.load.in_flight()
        pid = kafka.pid_of(one_broker)
        assert pid is not None
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        while kafka.pid_of(one_broker) is not None:
            await asyncio.sleep(0.05)
        await asyncio.sleep(BROKER_DOWN_S)
        relaunched_at = time.time()
        await asyncio.to_thread(kafka.start, one_broker)
        back_at = time.time()  # the broker answers metadata requests again
        last_before = max((t for t in r.load.completed_at.values() if t < killed_at), default=None)

        async def resumed() -> bool:
            return r.load.first_completion_after(back_at) is not None

        await until(resumed, 120, "no execution completed after the broker came back")
        first_after = r.load.first_completion_after(back_at)
        assert first_after is not None
        resume_s = first_after - back_at

        async def new_ones() -> bool:
            return r.load.first_new_completion(back_at) is not None

        await until(new_ones, 120, "no execution started after the broker's return completed")
        first_new = r.load.first_new_completion(back_at)
        assert first_new is not None

        # The API reconnected by itself: ready, and it takes a command again.
        async def api_ready() -> bool:
            try:
                return (await r.api("GET", "/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        api_s = await until(api_ready, 60, "the API did not become ready again")
        via_api = await r.api("POST", "/executions", json={"workflow": "w3", "inputs": {"n": 7}})
        assert via_api.status_code == 202, via_api.text
        api_id = via_api.json()["execution_id"]
        await asyncio.sleep(2)
        figures = await check_exactly_once(r, producing)
        api_result = await r.client.wait(api_id, timeout=60)
        assert api_result.status == "completed" and api_result.output == {"n": 16}
        verdict = verify(r)

    assert resume_s < RESUME_BOUND_S, f"{resume_s:.1f} s to resume after the broker came back"
    record(
        "single_broker_restart",
        {
            "in_flight_at_kill": in_flight,
            "down_s": round(relaunched_at - killed_at, 1),
            "broker_start_s": round(back_at - relaunched_at, 1),
            "resume_after_return_s": round(resume_s, 2),
            "first_start_after_return_completed_s": round(first_new - back_at, 2),
            "no_completion_for_s": round(first_after - (last_before or killed_at), 1),
            "api_ready_after_resume_s": round(api_s, 1),
            **figures,
            "verify": verdict,
        },
    )


# -- 3. PostgreSQL away for 30 s -----------------------------------------------------------------


async def test_postgres_outage_under_load(
    single_rig_settings: Settings, own_postgres: postgres.PostgresLayout, tmp_path: Path
) -> None:
    async with rig(single_rig_settings, "pg-outage", tmp_path, with_api=True) as r:
        probe = await r.client.run("w3", {"n": 2}, f"{r.load.prefix}-probe", timeout=60)
        path = f"/executions/{probe.execution_id}"

        async def api_sees_probe() -> bool:
            return (await r.api("GET", path)).status_code == 200

        await until(api_sees_probe, 60, "the mirror did not record the probe execution")
        producing = asyncio.ensure_future(r.load.run())
        await asyncio.sleep(3)
        in_flight = r.load.in_flight()
        await asyncio.to_thread(postgres.stop, own_postgres)
        stopped_at = time.time()
        # The API: 503 with a JSON error for reads and on /readyz, never a 500 or a hang.
        answers = []
        while time.time() - stopped_at < PG_OUTAGE_S:
            got = await r.api("GET", path)
            answers.append(got.status_code)
            assert got.status_code == 503, got.text
            assert got.headers["content-type"].startswith("application/json")
            assert "error" in got.json(), got.text
            ready = await r.api("GET", "/readyz")
            assert ready.status_code == 503 and ready.json()["database"] is False, ready.text
            await asyncio.sleep(1)
        outage_body = got.json()
        back_from = time.time()
        # The workers do not need PostgreSQL: executions completed all along.
        during = r.load.completions_between(stopped_at + PG_OUTAGE_S / 2, back_from)
        assert during > 0, "no execution completed in the second half of the outage"
        completions_during = r.load.completions_between(stopped_at, back_from)
        await asyncio.to_thread(postgres.start, own_postgres)
        back_at = time.time()

        async def api_ok() -> bool:
            return (await r.api("GET", path)).status_code == 200

        api_s = await until(api_ok, 60, "the API did not answer 200 again after the outage")
        await asyncio.sleep(2)
        caught_up_from = time.time()
        # Waits for the mirror to hold every execution.
        figures = await check_exactly_once(r, producing)
        mirror_s = time.time() - back_at
        verdict = verify(r)

    record(
        "postgres_outage",
        {
            "outage_s": round(back_from - stopped_at, 1),
            "in_flight_at_stop": in_flight,
            "completions_during_outage": completions_during,
            "api_503_answers": len(answers),
            "api_503_body": outage_body,
            "api_200_after_return_s": round(api_s, 1),
            "mirror_caught_up_after_return_s": round(mirror_s, 1),
            "mirror_check_after_load_stop_s": round(time.time() - caught_up_from, 1),
            **figures,
            "verify": verdict,
        },
    )
