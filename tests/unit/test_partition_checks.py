"""An execution on two partitions, commands off their home, topics grown past their declared
partition count: what verify, the cluster view and `topics apply` say (no Kafka, no PostgreSQL)."""

from __future__ import annotations

from typing import Any

import orjson

from cerebelum.admin import verify as v
from cerebelum.admin.cluster import GroupDescription, Member, build_view
from cerebelum.admin.topics import TopicSpec, partition_count_problems
from cerebelum.admin.verify import CommandRecord, check_commands, check_history, read_event
from cerebelum.cli.cluster import format_view
from cerebelum.constants import DEFAULT_NAMES, PARTITIONS
from cerebelum.core import events as ev
from cerebelum.core.commands import cancel_command, signal_command, start_command
from cerebelum.core.events import make_event
from cerebelum.core.ids import home_partition

AT = 1_700_000_000_000


def started(eid: str) -> dict[str, Any]:
    return make_event(eid, 1, ev.EXECUTION_STARTED, AT, workflow="w3", workflow_version="1",
                      inputs={})  # fmt: skip


def away_from_home(eid: str) -> int:
    return (home_partition(eid, PARTITIONS) + 1) % PARTITIONS


# --- partition_count_problems ------------------------------------------------------------------


def test_declared_counts_raise_no_problem() -> None:
    assert partition_count_problems({DEFAULT_NAMES.commands: 64, DEFAULT_NAMES.events: 64}) == []
    assert partition_count_problems({}) == []  # only the topics given are checked
    assert partition_count_problems({"someone.elses": 3}) == []


def test_a_grown_or_shrunk_topic_is_a_problem_that_names_it() -> None:
    problems = partition_count_problems({DEFAULT_NAMES.commands: 68, DEFAULT_NAMES.events: 32})
    assert len(problems) == 2
    assert DEFAULT_NAMES.commands in problems[0] and "68" in problems[0] and "64" in problems[0]
    assert "64-67" in problems[0]  # the partitions nobody serves
    assert DEFAULT_NAMES.events in problems[1] and "32" in problems[1]


def test_declarations_can_be_given() -> None:
    declared = [TopicSpec("t", 4, 1)]
    assert partition_count_problems({"t": 4}, declared) == []
    (problem,) = partition_count_problems({"t": 6}, declared)
    assert "topic t has 6 partitions, declared 4" in problem and "4-5" in problem


# --- verify: one id, two partitions -------------------------------------------------------------


def test_an_execution_with_events_on_two_partitions_is_reported_with_both() -> None:
    eid = "twice"
    home, away = home_partition(eid, PARTITIONS), away_from_home(eid)
    events = [
        read_event(orjson.dumps(started(eid)), home, 10)[1],
        read_event(orjson.dumps(started(eid)), away, 20)[1],
    ]
    findings = [f for f in check_history(eid, events) if f.kind == v.TWO_PARTITIONS]
    assert len(findings) == 1
    assert str(home) in findings[0].detail and str(away) in findings[0].detail
    assert findings[0].partition == away


def test_an_execution_on_its_home_partition_alone_is_fine() -> None:
    eid = "once"
    event = read_event(orjson.dumps(started(eid)), home_partition(eid, PARTITIONS), 1)[1]
    assert check_history(eid, [event]) == []


def test_a_processed_command_off_its_home_partition_is_reported() -> None:
    ids = ["wrong-start", "wrong-signal", "wrong-cancel", "dead", "pending"]
    values = [
        start_command(ids[0], "w3", {}),
        signal_command(ids[1], "go", None),
        cancel_command(ids[2], "stop"),
        start_command(ids[3], "w3", {}),  # dead-lettered: handled
        start_command(ids[4], "w3", {}),  # not processed yet: pending
    ]
    records = [CommandRecord(away_from_home(i), offset, value)
               for offset, (i, value) in enumerate(zip(ids, values, strict=True))]  # fmt: skip
    committed = {r.partition: r.offset + 1 for r in records[:4]}
    dead = {(records[3].partition, records[3].offset)}
    result = check_commands(records, set(ids[:1]), dead, committed)
    wrong = [f for f in result.findings if f.kind == v.WRONG_PARTITION]
    assert [f.execution_id for f in wrong] == ids[:3]
    for f, i in zip(wrong, ids, strict=False):
        assert f.partition == away_from_home(i)
        assert str(away_from_home(i)) in f.detail and str(home_partition(i, PARTITIONS)) in f.detail


def test_a_command_on_its_home_partition_is_fine() -> None:
    eid = "home"
    record = CommandRecord(home_partition(eid, PARTITIONS), 0, start_command(eid, "w3", {}))
    result = check_commands([record], {eid}, set(), {record.partition: 1})
    assert result.findings == []


def test_commands_on_partitions_nobody_serves_are_reported_processed_or_not() -> None:
    records = [
        CommandRecord(64, 0, start_command("grown-0", "w3", {})),
        CommandRecord(67, 5, b"garbage"),
    ]
    result = check_commands(records, set(), set(), {})
    assert [(f.kind, f.execution_id, f.partition) for f in result.findings] == [
        (v.UNSERVED_PARTITION, "grown-0", 64),
        (v.UNSERVED_PARTITION, None, 67),
    ]


# --- the cluster view ---------------------------------------------------------------------------


def test_the_view_reports_a_partition_count_mismatch_and_the_unserved_partitions() -> None:
    workers = GroupDescription("cerebelum-workers", "Stable", (
        Member("m-a", "cerebelum-worker:a", "/h", tuple(range(66))),
    ))  # fmt: skip
    mirror = GroupDescription("cerebelum-mirror", "Stable", ())
    view = build_view(
        workers, {}, {}, {64: 3, 65: 1}, mirror, {}, {}, None,
        partition_counts={DEFAULT_NAMES.commands: 66, DEFAULT_NAMES.events: 64},
    )  # fmt: skip
    assert (
        len(view["partition_problems"]) == 1
        and DEFAULT_NAMES.commands in view["partition_problems"][0]
    )
    # Assigned to a worker or not, no worker serves them: ids map onto 0-63 only.
    assert view["unserved_partitions"] == [64, 65]
    assert [p["partition"] for p in view["partitions"]][-2:] == [64, 65]
    assert view["partitions"][64]["lag"] == 3 and view["lag"] == 4
    text = format_view(view)
    assert "PROBLEM" in text and "unserved partitions: 64-65" in text


def test_the_view_of_a_declared_cluster_has_no_problem() -> None:
    workers = GroupDescription("cerebelum-workers", "Stable", ())
    mirror = GroupDescription("cerebelum-mirror", "Stable", ())
    view = build_view(
        workers, {}, {}, {}, mirror, {}, {}, None,
        partition_counts={DEFAULT_NAMES.commands: 64, DEFAULT_NAMES.events: 64},
    )  # fmt: skip
    assert view["partition_problems"] == [] and view["unserved_partitions"] == []
    assert len(view["partitions"]) == 64
    assert "PROBLEM" not in format_view(view)
