"""The step table (cerebelum.api.steps) of real histories: the golden event logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cerebelum.api.steps import step_table

GOLDEN = Path(__file__).parent.parent / "golden"


def table(name: str) -> dict[str, dict[str, Any]]:
    return {r["step"]: r for r in step_table(json.loads((GOLDEN / f"{name}.json").read_text()))}


def test_retries_are_runs_of_one_step_with_the_last_error() -> None:
    steps = table("order-payment-retry")
    assert list(steps) == ["validate", "reserve", "charge", "review", "ship"]
    charge = steps["charge"]
    assert charge["status"] == "completed" and charge["attempts"] == 3
    assert [(r["attempt"], r["outcome"]) for r in charge["runs"]] == [
        (1, "failed"), (2, "failed"), (3, "completed")]  # fmt: skip
    assert [r["duration_ms"] for r in charge["runs"]] == [2, 1, 1]
    assert (charge["started_at"], charge["finished_at"]) == (1700000000001, 1700000000641)
    assert charge["duration_ms"] == 640  # first dispatch to success, retry waits included
    assert charge["last_error"]["type"] == "PaymentUnavailable"
    assert charge["last_error"]["attempt"] == 2
    assert "review" in steps and steps["review"]["runs"][0]["outcome"] == "completed"


def test_a_wait_for_approval_is_a_run_of_kind_wait() -> None:
    approval = table("order-approved")["approval"]
    assert approval["status"] == "completed" and approval["attempts"] == 0
    assert approval["runs"] == [{"attempt": 1, "kind": "wait", "started_at": 1700000000004,
                                 "ended_at": 1700000000005, "outcome": "completed",
                                 "duration_ms": 1}]  # fmt: skip


def test_every_golden_history_gives_a_table_whose_runs_end_in_order() -> None:
    for path in GOLDEN.glob("*.json"):
        for row in step_table(json.loads(path.read_text())):
            ends = [r["ended_at"] for r in row["runs"] if r["ended_at"] is not None]
            assert ends == sorted(ends), (path.name, row["step"])
            assert row["status"] in {"pending", "running", "waiting", "retrying", "completed",
                                     "failed"}  # fmt: skip
