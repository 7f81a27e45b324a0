"""The verifier's checks on synthetic histories and commands (no Kafka, no PostgreSQL)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cerebelum.admin import verify as v
from cerebelum.admin.cluster import GroupDescription, Member, build_view, group_description
from cerebelum.admin.verify import (
    CommandRecord,
    KafkaHistory,
    SeenEvent,
    check_commands,
    check_database,
    check_history,
    read_event,
)
from cerebelum.cli.cluster import format_view, ranges
from cerebelum.core import events as ev
from cerebelum.core.commands import cancel_command, start_command
from cerebelum.core.events import make_event
from cerebelum.mirror.fold import MalformedEvent

AT = 1_700_000_000_000


def w3(eid: str = "e1") -> list[dict[str, Any]]:
    """A clean three-step history: 8 events."""
    out = [make_event(eid, 1, ev.EXECUTION_STARTED, AT, workflow="w3", workflow_version="1",
                      inputs={"n": 1})]  # fmt: skip
    for i, step in enumerate(("step1", "step2", "step3")):
        out.append(make_event(eid, 2 + 2 * i, ev.STEP_SCHEDULED, AT, step=step, node=i, attempt=1))
        out.append(make_event(eid, 3 + 2 * i, ev.STEP_COMPLETED, AT, step=step, attempt=1,
                              result={"n": i}))  # fmt: skip
    out.append(make_event(eid, 8, ev.EXECUTION_COMPLETED, AT, output={"n": 4}))
    return out


def seen(events: list[dict[str, Any]], partition: int = 7) -> list[SeenEvent]:
    """The events as the verifier keeps them, at consecutive offsets in this order."""
    return [read_event(orjson.dumps(e), partition, offset)[1] for offset, e in enumerate(events)]


def kinds(events: list[dict[str, Any]], complete: bool = True) -> list[str]:
    return [f.kind for f in check_history("e1", seen(events), complete)]


# --- histories ---------------------------------------------------------------------------------


def test_a_clean_history_has_no_findings() -> None:
    assert kinds(w3()) == []


def test_signal_completions_and_retries_are_not_results_recorded_twice() -> None:
    history = [
        make_event("e1", 1, ev.EXECUTION_STARTED, AT, workflow="x", workflow_version="1",
                   inputs={}),
        make_event("e1", 2, ev.STEP_SCHEDULED, AT, step="a", node=0, attempt=1),
        make_event("e1", 3, ev.STEP_FAILED, AT, step="a", attempt=1, error={"type": "E"}),
        make_event("e1", 4, ev.STEP_RETRY_SCHEDULED, AT, step="a", attempt=2, timer_id="t"),
        make_event("e1", 5, ev.TIMER_FIRED, AT, timer_id="t"),
        make_event("e1", 6, ev.STEP_SCHEDULED, AT, step="a", node=0, attempt=2),
        make_event("e1", 7, ev.STEP_COMPLETED, AT, step="a", attempt=2, result=1),
        make_event("e1", 8, ev.SIGNAL_AWAITED, AT, signal="ok", step="wait", node=1),
        make_event("e1", 9, ev.SIGNAL_RECEIVED, AT, signal="ok", payload=1),
        make_event("e1", 10, ev.STEP_COMPLETED, AT, step="wait", attempt=1, result=1, signal="ok"),
        make_event("e1", 11, ev.EXECUTION_COMPLETED, AT, output=1),
    ]  # fmt: skip
    assert kinds(history) == []


def test_a_missing_version_is_a_gap() -> None:
    history = w3()
    del history[3:5]  # versions 4 and 5: step2's dispatch and result
    findings = check_history("e1", seen(history))
    assert [f.kind for f in findings] == [v.VERSION_GAP]
    assert "version(s) 4-5 of 1..8" in findings[0].detail and findings[0].execution_id == "e1"
    del history[2]  # and 3, step1's result: its dispatch stays open, which is no finding
    assert "3-5" in check_history("e1", seen(history))[0].detail


def test_gaps_are_described_as_ranges_without_building_them() -> None:
    history = w3()[:2] + [make_event("e1", 2**31 - 1, ev.TIMER_FIRED, AT, timer_id="t")]
    (finding,) = check_history("e1", seen(history))
    assert finding.kind == v.VERSION_GAP
    assert f"3-{2**31 - 2}" in finding.detail


def test_the_same_event_twice_is_a_duplicate_version() -> None:
    history = w3()
    history.insert(4, history[2])  # version 3 again, byte for byte
    findings = check_history("e1", seen(history))
    assert [f.kind for f in findings] == [v.DUPLICATE_VERSION]
    assert findings[0].offset == 4 and findings[0].partition == 7


def test_two_different_events_with_one_version_conflict() -> None:
    history = w3()
    history.append(make_event("e1", 8, ev.EXECUTION_FAILED, AT, error={"type": "Zombie"}))
    findings = check_history("e1", seen(history))
    assert [f.kind for f in findings] == [v.CONFLICTING_VERSION]
    assert "ExecutionCompleted" in findings[0].detail and "ExecutionFailed" in findings[0].detail


def test_a_second_result_for_one_dispatch_is_recorded_twice() -> None:
    history = w3()[:3] + [
        make_event("e1", 4, ev.STEP_COMPLETED, AT, step="step1", attempt=1, result={"n": 9}),
    ]
    findings = check_history("e1", seen(history))
    assert [f.kind for f in findings] == [v.RESULT_RECORDED_TWICE]
    assert "step1" in findings[0].detail and findings[0].offset == 3


def test_a_result_of_a_step_never_scheduled_is_recorded_twice_too() -> None:
    history = w3()[:1] + [make_event("e1", 2, ev.STEP_FAILED, AT, step="ghost", attempt=1)]
    assert kinds(history) == [v.RESULT_RECORDED_TWICE]


def test_a_history_not_starting_with_execution_started() -> None:
    history = [make_event("e1", 1, ev.STEP_SCHEDULED, AT, step="a", node=0, attempt=1)]
    assert kinds(history) == [v.NOT_STARTED]


def test_kafka_order_not_version_order_decides_nothing() -> None:
    assert kinds(list(reversed(w3()))) == []


def test_a_partial_history_is_checked_from_its_first_version() -> None:
    tail = w3()[3:]  # versions 4..8: read with --since-ms, begun before the window
    assert kinds(tail, complete=False) == []
    assert kinds(tail, complete=True) == [v.VERSION_GAP, v.NOT_STARTED]
    gap = tail[:1] + tail[2:]
    assert kinds(gap, complete=False) == [v.VERSION_GAP]


def test_malformed_events_are_refused_as_the_mirror_refuses_them() -> None:
    with pytest.raises(MalformedEvent):
        read_event(b"not json", 0, 0)
    with pytest.raises(MalformedEvent):
        read_event(orjson.dumps({"execution_id": "e1", "version": 0}), 0, 0)


# --- commands ----------------------------------------------------------------------------------


def commands(*values: bytes | None, partition: int = 3) -> list[CommandRecord]:
    # The ids below (a50, b137, c14, d13) have partition 3 as their home partition.
    return [CommandRecord(partition, offset, value) for offset, value in enumerate(values)]


def test_processed_starts_must_have_an_execution_or_a_dead_letter() -> None:
    records = commands(
        start_command("a50", "w3", {}),  # 0: started
        start_command("b137", "nope", {}),  # 1: dead-lettered (unknown workflow)
        start_command("c14", "w3", {}),  # 2: lost
        b"garbage",  # 3: malformed, dead-lettered
        b"{}",  # 4: malformed, NOT dead-lettered
        cancel_command("a50", "x"),  # 5: not a start: not checked
        start_command("d13", "w3", {}),  # 6: pending
        b"more garbage",  # 7: pending
    )
    result = check_commands(records, {"a50"}, {(3, 1), (3, 3)}, {3: 6})
    assert [(f.kind, f.execution_id, f.offset) for f in result.findings] == [
        (v.LOST_START, "c14", 2),
        (v.MALFORMED_NOT_IN_DLQ, None, 4),
    ]
    assert (result.starts, result.dead_lettered) == (2, 2)
    assert (result.pending, result.pending_starts) == (2, 1)


def test_a_partition_never_committed_is_all_pending() -> None:
    result = check_commands(commands(start_command("a50", "w3", {}), b"x"), set(), set(), {})
    assert result.findings == [] and result.pending == 2 and result.pending_starts == 1


def test_commands_can_be_checked_chunk_by_chunk() -> None:
    records = commands(start_command("a50", "w3", {}), start_command("b137", "w3", {}))
    result = check_commands(records[:1], set(), set(), {3: 2})
    check_commands(records[1:], {"b137"}, set(), {3: 2}, into=result)
    assert [f.execution_id for f in result.findings] == ["a50"] and result.starts == 2


# --- database ----------------------------------------------------------------------------------


def test_database_rows_must_match_kafka() -> None:
    kafka = {
        "ok": KafkaHistory(8, 8, True),
        "short": KafkaHistory(8, 8, True),
        "stale": KafkaHistory(8, 8, True),
        "absent": KafkaHistory(2, 2, True),
        "partial": KafkaHistory(3, 8, False),  # only 3 versions read: count not compared
    }
    stored = {"ok": (8, 8), "short": (7, 8), "stale": (8, 8), "partial": (8, 8)}
    last = {"ok": 8, "short": 8, "stale": 6, "partial": 8}
    findings = check_database(kafka, stored, last)
    assert [(f.kind, f.execution_id) for f in findings] == [
        (v.DATABASE_MISMATCH, "short"),
        (v.DATABASE_MISMATCH, "stale"),
        (v.DATABASE_MISMATCH, "absent"),
    ]
    assert "last_version is 6" in findings[1].detail


def test_report_counts_findings_by_kind() -> None:
    report = v.Report(findings=[
        v.Finding(v.VERSION_GAP, "a", ""), v.Finding(v.LOST_START, "b", ""),
        v.Finding(v.VERSION_GAP, "c", ""),
    ])  # fmt: skip
    assert report.by_kind() == {v.VERSION_GAP: 2, v.LOST_START: 1}
    as_dict = report.as_dict(examples=1)
    assert as_dict["ok"] is False and len(as_dict["findings"]) == 1


# --- the cluster view's pure parts -------------------------------------------------------------


def test_group_descriptions_name_each_members_partitions() -> None:
    from confluent_kafka import ConsumerGroupState, TopicPartition
    from confluent_kafka.admin import ConsumerGroupDescription, MemberAssignment, MemberDescription

    tps = [TopicPartition("cerebelum.commands", p) for p in (2, 0, 1)] + [TopicPartition("x", 5)]
    found = ConsumerGroupDescription(
        "cerebelum-workers", False,
        [MemberDescription("m-1", "cerebelum-worker:h:1", "/1.2.3.4", MemberAssignment(tps)),
         MemberDescription("m-2", "c", "h", MemberAssignment([]))],
        "", ConsumerGroupState.PREPARING_REBALANCING, None,
    )  # fmt: skip
    group = group_description("cerebelum-workers", found, "cerebelum.commands")
    assert group.state == "PreparingRebalance"
    assert group.members == (
        Member("m-1", "cerebelum-worker:h:1", "/1.2.3.4", (0, 1, 2)),
        Member("m-2", "c", "h", ()),
    )


def test_the_view_puts_owners_lag_and_live_counts_together() -> None:
    workers = GroupDescription("cerebelum-workers", "Stable", (
        Member("m-a", "cerebelum-worker:a", "/h", tuple(range(32))),
        Member("m-b", "cerebelum-worker:b", "/h", tuple(range(32, 63))),
    ))  # fmt: skip
    mirror = GroupDescription("cerebelum-mirror", "Stable", ())
    view = build_view(
        workers, {0: 5, 40: 10}, {1: 3}, {0: 7, 1: 4, 40: 10}, mirror,
        {0: 9, 1: 3}, {0: 10, 1: 6, 2: 4}, {0: 2, 40: 1},
    )  # fmt: skip
    parts = view["partitions"]
    first = parts[0]
    assert (first["owner"], first["lag"], first["live_executions"]) == ("cerebelum-worker:a", 2, 2)
    assert parts[1]["lag"] == 1  # never committed: read from its first held offset, 3
    assert parts[63]["owner"] is None and view["unowned_partitions"] == [63]
    assert [w["lag"] for w in view["workers"]] == [3, 0]
    assert [w["live_executions"] for w in view["workers"]] == [2, 1]
    assert view["lag"] == 3 and view["live_executions"] == 3
    # The mirror: one offset per partition is the last transaction's marker, not lag.
    assert view["mirror"]["behind"] == {1: 2, 2: 4} and view["mirror"]["lag"] == 6
    text = format_view(view)
    assert "cerebelum-worker:a" in text and "0-31 (32)" in text and "unowned partitions: 63" in text


def test_ranges() -> None:
    assert ranges([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert ranges([]) == "" and ranges([3]) == "3"


def test_the_checks_do_no_io() -> None:
    import ast
    from pathlib import Path

    tree = ast.parse(Path(v.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    io = {"asyncio", "aiokafka", "asyncpg", "fastapi", "httpx", "socket"}
    assert not {m for m in imported if m.split(".")[0] in io}
