"""The mirror's pure logic: decoding records, ordering a batch, folding events into rows."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cerebelum.core import events as ev
from cerebelum.core.events import error_info, make_event
from cerebelum.mirror.fold import (
    EFFECTS,
    MAX_AT_MS,
    EventRow,
    ExecutionRow,
    MalformedEvent,
    decode_event,
    fold,
    sort_and_dedupe,
)

AT = 1_700_000_000_000


def raw(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def row(event: dict[str, Any], offset: int = 0, partition: int = 3) -> EventRow:
    return decode_event(raw(event), partition, offset)


def history(execution_id: str = "e1") -> list[dict[str, Any]]:
    """A three-step execution whose second step fails once, then completes."""
    return [
        make_event(execution_id, 1, ev.EXECUTION_STARTED, AT, workflow="order",
                   workflow_version="v2", inputs={"order_id": 7}),
        make_event(execution_id, 2, ev.STEP_SCHEDULED, AT + 1, step="validate", index=0, attempt=1),
        make_event(execution_id, 3, ev.STEP_COMPLETED, AT + 2, step="validate", attempt=1,
                   result={"ok": True}),
        make_event(execution_id, 4, ev.STEP_SCHEDULED, AT + 3, step="charge", index=1, attempt=1),
        make_event(execution_id, 5, ev.STEP_FAILED, AT + 4, step="charge", attempt=1,
                   error=error_info("Timeout", "card service")),
        make_event(execution_id, 6, ev.STEP_SCHEDULED, AT + 5, step="charge", index=1, attempt=2),
        make_event(execution_id, 7, ev.STEP_COMPLETED, AT + 6, step="charge", attempt=2, result=1),
        make_event(execution_id, 8, ev.EXECUTION_COMPLETED, AT + 7, output={"shipped": True}),
    ]  # fmt: skip


# --- decode_event -------------------------------------------------------------------------------


def test_decode_keeps_the_event_text_as_produced() -> None:
    event = history()[0]
    decoded = decode_event(raw(event), 5, 42)
    assert decoded.execution_id == "e1"
    assert decoded.version == 1
    assert decoded.type == ev.EXECUTION_STARTED
    assert decoded.schema == 1
    assert decoded.at == AT
    assert decoded.data == raw(event).decode()
    assert (decoded.kafka_partition, decoded.kafka_offset) == (5, 42)
    assert decoded.event == event


GOOD = {"execution_id": "e1", "version": 1, "type": "StepScheduled", "schema": 1, "at": AT}


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"not json",
        b'{"execution_id": "e1"',
        b"[1, 2]",
        b'"a string"',
        b"\xff\xfe",
        raw({**GOOD, "execution_id": ""}),
        raw({**GOOD, "execution_id": 7}),
        raw({**GOOD, "execution_id": "x" * 201}),
        raw({k: v for k, v in GOOD.items() if k != "execution_id"}),
        raw({k: v for k, v in GOOD.items() if k != "version"}),
        raw({**GOOD, "version": 0}),
        raw({**GOOD, "version": True}),
        raw({**GOOD, "version": "1"}),
        raw({**GOOD, "version": 1.0}),
        raw({**GOOD, "version": 2**31}),
        raw({k: v for k, v in GOOD.items() if k != "type"}),
        raw({**GOOD, "type": ""}),
        raw({**GOOD, "type": ["StepScheduled"]}),
        raw({k: v for k, v in GOOD.items() if k != "schema"}),
        raw({**GOOD, "schema": 2**15}),
        raw({**GOOD, "schema": -1}),
        raw({k: v for k, v in GOOD.items() if k != "at"}),
        raw({**GOOD, "at": -1}),
        raw({**GOOD, "at": 1.5}),
        raw({**GOOD, "at": MAX_AT_MS + 1}),
        raw({**GOOD, "at": "2024-01-01"}),
        raw({**GOOD, "execution_id": "e\x001"}),
        raw({**GOOD, "type": "Step\x00"}),
    ],
)
def test_malformed_records_are_refused_with_a_reason(value: bytes | None) -> None:
    with pytest.raises(MalformedEvent) as caught:
        decode_event(value, 0, 0)
    assert caught.value.reason


def test_nul_characters_in_payloads_are_replaced_not_refused() -> None:
    decoded = decode_event(raw({**GOOD, "step": "a\x00b", "x\x00": ["\x00"]}), 0, 0)
    assert "\\u0000" not in decoded.data
    assert orjson.loads(decoded.data) == {**GOOD, "step": "a\ufffdb", "x\ufffd": ["\ufffd"]}


def test_unknown_event_types_and_newer_schemas_are_accepted() -> None:
    decoded = decode_event(raw({**GOOD, "type": "SomethingNew", "schema": 9}), 0, 0)
    assert (decoded.type, decoded.schema) == ("SomethingNew", 9)


# --- sort_and_dedupe ----------------------------------------------------------------------------


def test_sort_orders_by_execution_then_version_and_keeps_the_first_duplicate() -> None:
    rows = [
        row(make_event("b", 2, "X", AT), offset=10),
        row(make_event("a", 2, "X", AT), offset=11),
        row(make_event("b", 1, "X", AT), offset=12),
        row(make_event("a", 1, "X", AT), offset=13),
        row(make_event("a", 1, "X", AT), offset=9),
    ]
    ordered = sort_and_dedupe(rows)
    assert [(r.execution_id, r.version, r.kafka_offset) for r in ordered] == [
        ("a", 1, 9),
        ("a", 2, 11),
        ("b", 1, 12),
        ("b", 2, 10),
    ]


# --- fold ---------------------------------------------------------------------------------------


def test_fold_of_a_whole_history() -> None:
    (execution,) = fold(sort_and_dedupe(row(e) for e in history()))
    assert execution == ExecutionRow(
        execution_id="e1",
        last_version=8,
        updated_at=AT + 7,
        workflow="order",
        workflow_version="v2",
        status="completed",
        current_step="charge",
        inputs='{"order_id":7}',
        output='{"shipped":true}',
        error=None,  # the failed first attempt's error does not outlive the completion
        started_at=AT,
        finished_at=AT + 7,
        kafka_partition=3,
    )


def test_fold_of_a_later_batch_leaves_unset_columns_none() -> None:
    (execution,) = fold([row(e) for e in history()[4:6]])
    assert execution.last_version == 6
    assert execution.status == "running"  # StepScheduled
    assert execution.current_step == "charge"
    assert execution.error is not None
    assert execution.workflow is None and execution.inputs is None and execution.started_at is None
    assert execution.output is None and execution.finished_at is None


def test_fold_gives_one_row_per_execution_in_order() -> None:
    rows = sort_and_dedupe([row(e) for e in history("b")[:3] + history("a")[:2]])
    folded = fold(rows)
    assert [(f.execution_id, f.last_version) for f in folded] == [("a", 2), ("b", 3)]


def test_fold_records_the_partition_the_events_are_on() -> None:
    folded = fold([row(e, partition=41) for e in history()[3:5]])
    assert [f.kafka_partition for f in folded] == [41]


def test_failed_execution() -> None:
    failed = make_event("e1", 9, ev.EXECUTION_FAILED, AT + 9,
                        error=error_info("StepError", "no stock", "reserve"))  # fmt: skip
    (execution,) = fold([row(failed)])
    assert execution.status == "failed"
    assert orjson.loads(execution.error or "") == {
        "type": "StepError",
        "message": "no stock",
        "step": "reserve",
    }
    assert execution.finished_at == AT + 9


def test_a_completion_clears_the_error_of_an_earlier_attempt() -> None:
    # The failed attempt and the completion in separate batches, as the mirror may see them.
    (failed_attempt,) = fold([row(e) for e in history()[4:5]])
    (completion,) = fold([row(e) for e in history()[5:]])
    assert failed_attempt.error is not None and failed_attempt.finished_at is None
    assert completion.error is None and completion.finished_at == AT + 7
    assert merge(merge(None, failed_attempt), completion).error is None


def test_a_cancelled_execution_has_the_core_error_shape() -> None:
    cancelled = make_event("e1", 5, ev.EXECUTION_CANCELLED, AT + 5, reason="customer left")
    (execution,) = fold([row(cancelled)])
    assert execution.status == "cancelled" and execution.finished_at == AT + 5
    assert orjson.loads(execution.error or "") == ev.cancelled_error("customer left")
    assert ev.cancelled_error("customer left") == {"type": "Cancelled", "message": "customer left"}


def test_a_cancellation_without_a_readable_reason_still_has_the_shape() -> None:
    for reason in ({}, {"reason": 7}):
        (execution,) = fold([row(make_event("e1", 5, ev.EXECUTION_CANCELLED, AT, **reason))])
        error = orjson.loads(execution.error or "")
        assert error["type"] == "Cancelled" and isinstance(error["message"], str)


@pytest.mark.parametrize(
    ("event_type", "status"),
    [
        (ev.EXECUTION_STARTED, "running"),
        (ev.STEP_SCHEDULED, "running"),
        (ev.STEP_COMPLETED, None),
        (ev.STEP_FAILED, None),
        (ev.EXECUTION_COMPLETED, "completed"),
        (ev.EXECUTION_FAILED, "failed"),
        (ev.EXECUTION_CANCELLED, "cancelled"),
        (ev.TIMER_STARTED, None),  # only a sleep timer means sleeping: see the test below
        (ev.TIMER_FIRED, None),
        (ev.SIGNAL_AWAITED, "waiting"),
        (ev.SIGNAL_RECEIVED, None),
        (ev.APPROVAL_REQUESTED, "waiting"),
        (ev.STEP_RETRY_SCHEDULED, "retrying"),
        ("NotYetInvented", None),
    ],
)
def test_status_after_each_event_type(event_type: str, status: str | None) -> None:
    (execution,) = fold([row(make_event("e1", 4, event_type, AT))])
    assert execution.status == status
    assert execution.last_version == 4


def test_every_core_event_type_is_in_the_table_or_deliberately_neutral() -> None:
    assert ev.EVENT_TYPES == set(EFFECTS)


def test_text_columns_take_non_string_values_as_json() -> None:
    started = make_event("e1", 1, ev.EXECUTION_STARTED, AT, workflow="w", workflow_version=3,
                         inputs=None)  # fmt: skip
    (execution,) = fold([row(started)])
    assert execution.workflow_version == "3"
    assert execution.inputs == "null"  # a null input is a value, not "unknown"


# --- batch boundaries don't matter ---------------------------------------------------------------


def merge(stored: ExecutionRow | None, new: ExecutionRow) -> ExecutionRow:
    """What UPSERT_EXECUTIONS does with a stored row and a newer batch's row: None keeps the
    stored value, except the error of a batch that finishes the execution, which is final."""
    if stored is None:
        return new
    if stored.last_version >= new.last_version:
        return stored
    values = {
        f.name: getattr(new, f.name)
        if getattr(new, f.name) is not None or (f.name == "error" and new.finished_at is not None)
        else getattr(stored, f.name)
        for f in dataclasses.fields(ExecutionRow)
    }
    return ExecutionRow(**values)


@given(st.lists(st.integers(min_value=1, max_value=7), max_size=6, unique=True))
def test_folding_in_batches_equals_folding_at_once(cuts: list[int]) -> None:
    rows = [row(e) for e in history()]
    bounds = [0, *sorted(cuts), len(rows)]
    stored: ExecutionRow | None = None
    for start, end in itertools.pairwise(bounds):
        if start < end:
            (batch_row,) = fold(rows[start:end])
            stored = merge(stored, batch_row)
    assert stored == fold(rows)[0]


@given(st.integers(min_value=1, max_value=7))
def test_an_older_batch_after_a_newer_one_changes_nothing(cut: int) -> None:
    rows = [row(e) for e in history()]
    (whole,) = fold(rows)
    (older,) = fold(rows[:cut])
    assert merge(whole, older) == whole


def test_a_sleep_timer_means_sleeping_and_a_signal_timeout_keeps_waiting() -> None:
    sleep = make_event("e1", 1, ev.TIMER_STARTED, AT, purpose="sleep", step="nap")
    (execution,) = fold([row(sleep)])
    assert execution.status == "sleeping" and execution.current_step == "nap"
    timeout = make_event("e1", 1, ev.TIMER_STARTED, AT, purpose="signal_timeout", step="ok")
    (execution,) = fold([row(timeout)])
    assert execution.status is None
