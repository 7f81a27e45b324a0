"""The recovery header written beside each snapshot, and restore's index built from it."""

from __future__ import annotations

import orjson

from cerebelum.core.state import Execution
from cerebelum.worker.restore import FINISHED, PARKED, RUNNING, _index, recovery_header


def execution(eid: str, **fields: object) -> Execution:
    ex = Execution(eid)
    for k, v in fields.items():
        setattr(ex, k, v)
    return ex


def test_headers_say_finished_running_or_parked_with_timers() -> None:
    assert recovery_header(execution("a", status="completed")) == FINISHED
    assert recovery_header(execution("b", running={"s": 3})) == RUNNING
    parked = execution(
        "c",
        status="sleeping",
        timers={"sleep:n:4": {"fire_at": 99, "purpose": "sleep", "step": "n"}},
    )
    assert recovery_header(parked) == PARKED + b"\n99 sleep:n:4"


def test_index_collects_timers_and_in_flight_executions_without_decoding() -> None:
    table = {"a": b"not json: never decoded", "b": b"x", "c": b"y"}
    recovery = {
        "a": FINISHED,
        "b": RUNNING + b"\n5 retry:s:7",
        "c": PARKED + b"\n10 sleep:n:4\n20 signal:w:9",
    }
    out = _index(table, recovery)
    assert out.running == ["b"]
    assert sorted(out.timers) == [
        (5, "b", "retry:s:7"),
        (10, "c", "sleep:n:4"),
        (20, "c", "signal:w:9"),
    ]
    assert out.executions == table


def test_records_from_before_the_header_are_decoded_once() -> None:
    old = execution("d", running={"s": 2})
    out = _index({"d": orjson.dumps(old.to_record())}, {"d": None})
    assert out.running == ["d"]
