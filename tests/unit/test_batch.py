"""Deciding a batch (cerebelum.worker.batch): pure, no Kafka. What one transaction would write."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cerebelum.constants import (
    DEFAULT_NAMES,
    HEADER_DLQ_EXECUTION_ID,
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE_TOPIC,
    HEADER_STATE_WRITER,
    PARTITIONS,
    names,
)
from cerebelum.core.commands import StepOutcome, start_command
from cerebelum.core.events import error_info
from cerebelum.core.ids import home_partition
from cerebelum.core.workflow import Registry
from cerebelum.worker.batch import MAX_SNAPSHOT_BYTES, CommandRecord, Record, decide_batch
from cerebelum.worker.partition import PartitionState
from cerebelum.worker.restore import RestoredPartition
from tests import apps

REGISTRY = Registry.from_namespace(vars(apps))
WRITER = b"cerebelum-worker-test"


def partition(eid: str) -> PartitionState:
    return PartitionState(home_partition(eid, PARTITIONS), RestoredPartition(), committed=7)


def start(ps: PartitionState, eid: str, workflow: str = "w3", offset: int = 7, **kw: Any):
    value = start_command(eid, workflow, {"n": 1})
    return ps, CommandRecord(ps.partition, offset, kw.get("key", eid.encode()), value)


def decide(*inputs: Any):
    return decide_batch(list(inputs), REGISTRY, 1_000, PARTITIONS, WRITER)


def on(topic: str, records: list[Record]) -> list[Record]:
    return [r for r in records if r.topic == topic]


def dlq_reasons(records: list[Record]) -> list[str]:
    return [
        dict(r.headers or [])[HEADER_DLQ_REASON].decode() for r in on(DEFAULT_NAMES.dlq, records)
    ]


def test_a_start_writes_events_a_snapshot_with_its_writer_and_the_offset() -> None:
    ps = partition("e-1")
    batch = decide(start(ps, "e-1"))
    assert [orjson.loads(r.value)["type"] for r in on(DEFAULT_NAMES.events, batch.records)] == [
        "ExecutionStarted",
        "StepScheduled",
    ]
    (snapshot,) = on(DEFAULT_NAMES.state, batch.records)
    assert dict(snapshot.headers or [])[HEADER_STATE_WRITER] == WRITER
    assert batch.offsets == {ps.partition: 8}
    assert ps.executions == {}  # nothing installed before the transaction commits
    assert [type(effect).__name__ for _, effect in batch.effects] == ["RunStep"]


@pytest.mark.parametrize(
    ("key", "reason"),
    [(None, "has no key"), (b"someone-else", "key b'someone-else'")],
)
def test_a_command_keyed_otherwise_than_its_id_is_dead_lettered(
    key: bytes | None, reason: str
) -> None:
    ps = partition("e-2")
    batch = decide(start(ps, "e-2", key=key))
    assert on(DEFAULT_NAMES.events, batch.records) == []
    (why,) = dlq_reasons(batch.records)
    assert reason in why and "must be its execution_id" in why
    (dead,) = on(DEFAULT_NAMES.dlq, batch.records)
    assert dict(dead.headers or [])[HEADER_DLQ_EXECUTION_ID] == b"e-2"
    assert batch.offsets == {ps.partition: 8}  # consumed: it never blocks the partition


def test_a_command_on_another_partition_than_its_home_is_dead_lettered() -> None:
    home = home_partition("e-3", PARTITIONS)
    elsewhere = PartitionState((home + 1) % PARTITIONS, RestoredPartition(), committed=0)
    batch = decide(start(elsewhere, "e-3", offset=0))
    (why,) = dlq_reasons(batch.records)
    assert f"lives on partition {home}" in why
    assert on(DEFAULT_NAMES.state, batch.records) == []


def test_a_bug_deciding_a_command_dead_letters_it_and_the_others_go_on() -> None:
    bad, good = partition("e-4"), partition("e-5")
    batch = decide(start(bad, "e-4", "bug_at_start"), start(good, "e-5"))
    (why,) = dlq_reasons(batch.records)
    assert why.startswith("internal error: RuntimeError: injected bug")
    assert {
        orjson.loads(r.value)["execution_id"] for r in on(DEFAULT_NAMES.events, batch.records)
    } == {"e-5"}


def test_a_bug_deciding_an_outcome_fails_its_execution_and_leaves_the_state_as_it_was() -> None:
    ps = partition("e-6")
    first = decide(start(ps, "e-6", "bug_in_outcome"))
    for owner, eid, state in first.installs:
        owner.executions[eid] = state
    before = ps.load("e-6")
    assert before is not None
    version = before.version
    ((_, run),) = first.effects
    failed = StepOutcome("e-6", "bug_on_failure", run.token, False, error=error_info("X", "no"))
    batch = decide((ps, failed))
    events = [orjson.loads(r.value) for r in on(DEFAULT_NAMES.events, batch.records)]
    # the half-made decision (StepFailed) is dropped: the failure follows the last committed
    # version with no gap, and says what broke
    assert [e["version"] for e in events] == [version + 1]
    assert events[0]["type"] == "ExecutionFailed"
    assert events[0]["error"]["type"] == "InternalError"
    assert "injected bug" in events[0]["error"]["message"]
    assert ps.load("e-6") is before and before.version == version  # committed state untouched


def test_a_state_over_the_limit_fails_its_execution() -> None:
    ps = partition("e-7")
    first = decide(start(ps, "e-7"))
    for owner, eid, state in first.installs:
        owner.executions[eid] = state
    ((_, run),) = first.effects
    huge = StepOutcome("e-7", run.step.name, run.token, True, "x" * MAX_SNAPSHOT_BYTES)
    batch = decide((ps, huge))
    events = [orjson.loads(r.value) for r in on(DEFAULT_NAMES.events, batch.records)]
    assert events[-1]["type"] == "ExecutionFailed"
    assert events[-1]["error"]["type"] == "LimitExceeded"
    (snapshot,) = on(DEFAULT_NAMES.state, batch.records)
    assert orjson.loads(snapshot.value)["status"] == "failed"


def test_every_partition_written_for_carries_an_offset() -> None:
    a = partition("e-8")
    outcome_only = partition("e-9")
    batch = decide(start(a, "e-8"))
    for owner, eid, state in batch.installs:
        owner.executions[eid] = state
    ((_, run),) = batch.effects
    done = StepOutcome("e-8", run.step.name, run.token, True, {"n": 2})
    again = decide((a, done), start(outcome_only, "e-9", offset=3))
    assert again.offsets[a.partition] == 7  # no command read: its committed offset, again
    assert again.offsets[outcome_only.partition] == 4


def test_a_namespaces_worker_writes_to_its_topics_and_refuses_another_namespaces_command() -> None:
    n = names("team-a")
    mine, other = partition("e-ns-1"), partition("e-ns-2")
    theirs = start_command("e-ns-2", "w3", {"n": 1}, namespace="team-b")
    batch = decide_batch(
        [
            start(mine, "e-ns-1"),  # no namespace field: taken as the topic's
            (other, CommandRecord(other.partition, 7, b"e-ns-2", theirs)),
        ],
        REGISTRY,
        1_000,
        PARTITIONS,
        WRITER,
        n,
    )
    assert {r.topic for r in batch.records} == {n.events, n.state, n.dlq}
    (dead,) = on(n.dlq, batch.records)
    headers = dict(dead.headers or [])
    assert headers[HEADER_DLQ_REASON].decode() == (
        "command names namespace 'team-b', but it was read from namespace 'team-a''s commands "
        "topic (produced to the wrong namespace)"
    )
    assert headers[HEADER_DLQ_SOURCE_TOPIC] == n.commands.encode()
    assert headers[HEADER_DLQ_EXECUTION_ID] == b"e-ns-2"
    assert batch.dead_letters == {"invalid": 1}
