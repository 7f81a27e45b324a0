"""`cerebelum verify` against the real broker: clean after real work, loud on forged damage."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from cerebelum.admin.cluster import ClusterInspector
from cerebelum.client import Client, partition_for
from cerebelum.config import Settings
from cerebelum.core import events as ev
from cerebelum.core.commands import start_command
from cerebelum.core.events import make_event
from tests.conftest import ROOT, Processes, process_env

pytestmark = pytest.mark.integration

N = 50


async def run_verify(settings: Settings, *args: str) -> tuple[int, str, str]:
    """Run the CLI as a user would; (exit code, stdout, stderr)."""
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cerebelum", "verify", *args],
        cwd=ROOT, env=process_env(settings), capture_output=True, timeout=240,
    )  # fmt: skip
    return out.returncode, out.stdout.decode(), out.stderr.decode()


async def verify_json(settings: Settings, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = await run_verify(settings, "--json", "--examples", "100000", "--quiet", *args)
    assert code in (0, 1), err
    return code, orjson.loads(out)


async def wait_for_rows(settings: Settings, ids: list[str], timeout: float = 60) -> None:
    conn = await asyncpg.connect(settings.namespace_database_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            done = await conn.fetchval(
                "SELECT count(*) FROM executions WHERE execution_id = ANY($1::text[]) "
                "AND status IN ('completed', 'failed')",
                ids,
            )
            if done == len(ids):
                return
            assert time.monotonic() < deadline, f"{done} of {len(ids)} rows mirrored"
            await asyncio.sleep(0.3)
    finally:
        await conn.close()


async def test_real_work_verifies_clean(
    settings: Settings,
    database: None,
    processes: Processes,
    client: Client,
    unique: Callable[[str], str],
) -> None:
    since_ms = int(time.time() * 1000) - 1_000
    processes.worker()
    processes.mirror()
    ids = [unique(f"verify-{i}") for i in range(N)]
    await asyncio.gather(*[await client.start_nowait("w3", {"n": i}, eid)
                           for i, eid in enumerate(ids)])  # fmt: skip
    # Bad input goes to the DLQ, which is where the verifier must find it.
    unknown = unique("verify-unknown")
    await client.start("no-such-workflow", {}, unknown)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.names.commands, b"not a command", unique("bad").encode()
        )
    finally:
        await producer.stop()
    results = await asyncio.gather(*(client.wait(eid, timeout=120) for eid in ids))
    assert {r.status for r in results} == {"completed"}
    await wait_for_rows(settings, ids)
    await asyncio.sleep(1.0)  # the mirror commits its offsets just after the rows

    code, report = await verify_json(settings, "--since-ms", str(since_ms))
    assert code == 0, report
    assert report["ok"] is True and report["findings"] == []
    assert report["executions"] >= N and report["events"] >= 8 * N
    assert report["start_commands_checked"] >= N
    assert report["dead_lettered"] >= 2
    assert report["compared_with_database"] >= N

    code, out, _ = await run_verify(settings, "--since-ms", str(since_ms), "--no-db")
    assert code == 0 and "OK: no findings" in out

    # PostgreSQL that disagrees with Kafka is reported (our own rows, so no one else minds).
    conn = await asyncpg.connect(settings.namespace_database_url)
    try:
        await conn.execute("UPDATE executions SET last_version = 7 WHERE execution_id = $1", ids[0])
        await conn.execute("DELETE FROM events WHERE execution_id = $1 AND version = 3", ids[1])
    finally:
        await conn.close()
    code, report = await verify_json(settings, "--since-ms", str(since_ms))
    assert code == 1
    assert {(f["kind"], f["execution_id"]) for f in report["findings"]} == {
        ("database_mismatch", ids[0]),
        ("database_mismatch", ids[1]),
    }


async def committed_and_ends(settings: Settings) -> tuple[dict[int, int], dict[int, int]]:
    inspector = ClusterInspector(settings)
    try:
        committed = await inspector.committed(settings.names.worker_group, settings.names.commands)
        return committed, await inspector.end_offsets(settings.names.commands)
    finally:
        await inspector.close()


async def commit_past(settings: Settings, partition: int, offset: int) -> None:
    """Commit the worker group's offset of `partition` as if a worker had processed it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.names.worker_group,
        enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    try:
        tp = TopicPartition(settings.names.commands, partition)
        consumer.assign([tp])
        deadline = time.monotonic() + 30  # a member of an earlier test may linger a session
        while True:
            try:
                await consumer.commit({tp: offset})
                return
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1.0)
    finally:
        await consumer.stop()


async def test_forged_damage_is_reported_and_unprocessed_commands_are_pending(
    settings: Settings, topics: None, unique: Callable[[str], str]
) -> None:
    since_ms = int(time.time() * 1000) - 1_000
    conflicted, duplicated = unique("forged-conflict"), unique("forged-dup")
    pending = unique("pending")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        # 1. Histories no worker would write, straight onto the events topic.
        at = int(time.time() * 1000)
        forged = [
            make_event(conflicted, 1, ev.EXECUTION_STARTED, at, workflow="w3",
                       workflow_version="1", inputs={}),
            make_event(conflicted, 2, ev.STEP_SCHEDULED, at, step="step1", node=0, attempt=1),
            make_event(conflicted, 2, ev.EXECUTION_CANCELLED, at, reason="a zombie"),
            make_event(conflicted, 4, ev.TIMER_FIRED, at, timer_id="t"),  # 3 is missing
            make_event(duplicated, 1, ev.EXECUTION_STARTED, at, workflow="w3",
                       workflow_version="1", inputs={}),
            make_event(duplicated, 2, ev.STEP_SCHEDULED, at, step="step1", node=0, attempt=1),
            make_event(duplicated, 3, ev.STEP_COMPLETED, at, step="step1", attempt=1, result=1),
            make_event(duplicated, 3, ev.STEP_COMPLETED, at, step="step1", attempt=1, result=1),
            make_event(duplicated, 4, ev.STEP_COMPLETED, at, step="step1", attempt=1, result=2),
        ]  # fmt: skip
        for e in forged:
            eid = e["execution_id"]
            await producer.send_and_wait(
                settings.names.events, orjson.dumps(e), eid.encode(), partition=partition_for(eid)
            )
        # 2. A start-command no worker has processed (none runs): pending, not lost.
        await producer.send_and_wait(
            settings.names.commands, start_command(pending, "w3", {"n": 1}), pending.encode()
        )
        # 3. A start-command and a malformed command "processed" with nothing to show for it:
        #    on a partition with nothing pending, the group's offset is committed past them.
        committed, ends = await committed_and_ends(settings)
        for attempt in range(10_000):
            lost = unique(f"lost-{attempt}")
            q = partition_for(lost)
            if q != partition_for(pending) and committed.get(q, 0) == ends[q]:
                break
        else:
            pytest.fail("every partition of cerebelum.commands has unprocessed commands")
        sent = await producer.send_and_wait(
            settings.names.commands, start_command(lost, "w3", {"n": 1}), lost.encode()
        )
        assert sent.offset == ends[q]
        malformed = await producer.send_and_wait(settings.names.commands, b"{not json", partition=q)
    finally:
        await producer.stop()
    await commit_past(settings, q, malformed.offset + 1)

    for window in ((), ("--since-ms", str(since_ms))):
        code, report = await verify_json(settings, "--no-db", *window)
        assert code == 1, report
        found = {(f["kind"], f["execution_id"]) for f in report["findings"]}
        assert ("conflicting_version", conflicted) in found
        assert ("version_gap", conflicted) in found
        assert ("duplicate_version", duplicated) in found
        assert ("result_recorded_twice", duplicated) in found
        assert ("lost_start", lost) in found
        assert any(f["kind"] == "malformed_not_in_dlq" and (f["partition"], f["offset"]) ==
                   (q, malformed.offset) for f in report["findings"])  # fmt: skip
        assert not any(f["execution_id"] == pending for f in report["findings"])
        assert report["pending_start_commands"] >= 1
        ours = [f for f in report["findings"] if f["execution_id"] in (conflicted, duplicated)]
        assert len(ours) == 4, ours

    code, out, _ = await run_verify(settings, "--no-db", "--since-ms", str(since_ms))
    assert code == 1
    assert "FINDINGS" in out and "lost_start" in out and conflicted in out
