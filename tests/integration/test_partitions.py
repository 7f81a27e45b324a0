"""One id on two partitions, commands off their home, a commands topic grown past 64 partitions:
what `cerebelum verify`, `cerebelum cluster` and `cerebelum topics apply` say on the real broker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.errors import KafkaError

from cerebelum.admin.topics import TopicMismatch, apply_topics, load_declarations
from cerebelum.config import Settings
from cerebelum.constants import PARTITIONS
from cerebelum.core import events as ev
from cerebelum.core.commands import signal_command, start_command
from cerebelum.core.events import make_event
from cerebelum.core.ids import home_partition
from tests.conftest import LOGS, ROOT, Processes, process_env
from tests.integration.test_verify import commit_past, committed_and_ends, verify_json

pytestmark = pytest.mark.integration


async def cli(settings: Settings, *args: str) -> tuple[int, str]:
    """Run `cerebelum ARGS` as a user would: (exit code, stdout and stderr)."""
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "cerebelum", *args], cwd=ROOT,
        env=process_env(settings), capture_output=True, timeout=240,
    )  # fmt: skip
    return out.returncode, out.stdout.decode() + out.stderr.decode()


async def test_verify_reports_an_id_on_two_partitions_and_commands_off_their_home(
    settings: Settings, topics: None, unique: Callable[[str], str]
) -> None:
    since_ms = int(time.time() * 1000) - 1_000
    twice, misplaced = unique("twice"), unique("misplaced")
    home = home_partition(twice, PARTITIONS)
    away = (home + 1) % PARTITIONS
    committed, ends = await committed_and_ends(settings)
    # A partition with nothing pending, not the misplaced id's home: "processed" once committed.
    q = next(
        p for p in range(PARTITIONS)
        if committed.get(p, 0) == ends[p] and p != home_partition(misplaced, PARTITIONS)
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        at = int(time.time() * 1000)
        for partition in (home, away):  # what a wrongly keyed start used to leave behind
            event = make_event(twice, 1, ev.EXECUTION_STARTED, at, workflow="w3",
                               workflow_version="1", inputs={})  # fmt: skip
            await producer.send_and_wait(
                settings.names.events, orjson.dumps(event), twice.encode(), partition=partition
            )
        first = await producer.send_and_wait(
            settings.names.commands, start_command(misplaced, "w3", {}), None, partition=q
        )
        last = await producer.send_and_wait(
            settings.names.commands,
            signal_command(misplaced, "go", None),
            b"wrong key",
            partition=q,
        )
    finally:
        await producer.stop()
    await commit_past(settings, q, last.offset + 1)

    code, report = await verify_json(settings, "--no-db", "--since-ms", str(since_ms))
    assert code == 1, report
    (two,) = [f for f in report["findings"] if f["kind"] == "two_partitions"
              and f["execution_id"] == twice]  # fmt: skip
    assert f"partitions {min(home, away)}, {max(home, away)}" in two["detail"]
    assert f"home partition is {home}" in two["detail"]
    wrong = [f for f in report["findings"] if f["kind"] == "wrong_partition"
             and f["execution_id"] == misplaced]  # fmt: skip
    assert [(f["partition"], f["offset"]) for f in wrong] == [(q, first.offset), (q, last.offset)]
    assert all(f"home partition is {home_partition(misplaced, PARTITIONS)}" in f["detail"]
               for f in wrong)  # fmt: skip


@pytest.fixture
async def grown_commands(settings: Settings, topics: None) -> AsyncIterator[int]:
    """cerebelum.commands grown to PARTITIONS + 1 partitions; recreated as declared after,
    with cerebelum.dlq: dead letters name their command by partition and offset, which a new
    commands topic reuses (verify would take new commands for old dead letters)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_partitions({settings.names.commands: NewPartitions(PARTITIONS + 1)})
        # The broker's metadata learns the new partition a moment later (KRaft propagates it):
        # a producer started before would refuse partition 64 as unknown (a CI run did).
        async with asyncio.timeout(30):
            while True:
                (topic,) = await admin.describe_topics([settings.names.commands])
                if len(topic["partitions"]) == PARTITIONS + 1:
                    break
                await asyncio.sleep(0.2)
        yield PARTITIONS
    finally:
        await admin.delete_topics([settings.names.commands, settings.names.dlq])
        await admin.close()
        # Deletion completes in the background: re-apply until the topic is created anew.
        deadline = time.monotonic() + 60
        while True:
            try:
                await apply_topics(settings, load_declarations(names=settings.names))
                break
            except (KafkaError, TopicMismatch):  # still being deleted, or already re-created
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)


async def test_a_commands_topic_grown_past_64_partitions_is_refused_and_reported(
    settings: Settings, grown_commands: int, unique: Callable[[str], str], processes: Processes
) -> None:
    since_ms = int(time.time() * 1000) - 1_000
    stranded = unique("stranded")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.names.commands, start_command(stranded, "w3", {}), stranded.encode(),
            partition=grown_commands,
        )  # fmt: skip
    finally:
        await producer.stop()

    # A worker refuses to serve it (before the fix it ran, and partition 64 was owned by none).
    worker = processes.worker()
    code = await asyncio.to_thread(worker.wait, 120)
    log = (LOGS / f"{processes.name}-0-worker.log").read_text()
    assert code == 1 and "cannot serve this cluster" in log, log[-2000:]
    assert f"topic {settings.names.commands} has {PARTITIONS + 1} partitions" in log

    code, out = await cli(settings, "topics", "apply")
    assert code != 0, out
    assert (
        f"topic {settings.names.commands} has {PARTITIONS + 1} partitions, declared {PARTITIONS}"
        in out
    )

    # Before the fix: exit 0, no problem reported, partition 64 not in the view at all.
    code, out = await cli(settings, "cluster", "--json", "--no-db")
    assert code == 1, out
    view = orjson.loads(out[: out.rindex("}") + 1])
    assert view["unserved_partitions"] == [grown_commands]
    (problem,) = view["partition_problems"]
    assert settings.names.commands in problem
    assert view["partitions"][grown_commands]["end"] >= 1
    code, out = await cli(settings, "cluster", "--no-db")
    assert code == 1 and "PROBLEM" in out and f"unserved partitions: {grown_commands}" in out

    # Before the fix: partition 64 was never read, so verify found nothing.
    code, report = await verify_json(settings, "--no-db", "--since-ms", str(since_ms))
    assert code == 1, report
    ours = [
        (f["kind"], f["partition"]) for f in report["findings"] if f["execution_id"] == stranded
    ]
    assert ours == [("unserved_partition", grown_commands)]
    assert any(settings.names.commands in note for note in report["notes"])
