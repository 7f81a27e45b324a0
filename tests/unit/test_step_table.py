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
                                 "duration_ms": 1, "worker": None}]  # fmt: skip


def test_every_golden_history_gives_a_table_whose_runs_end_in_order() -> None:
    for path in GOLDEN.glob("*.json"):
        recorded = json.loads(path.read_text())  # a history, or several by execution id
        histories = recorded.values() if isinstance(recorded, dict) else [recorded]
        for row in (r for history in histories for r in step_table(history)):
            ends = [r["ended_at"] for r in row["runs"] if r["ended_at"] is not None]
            assert ends == sorted(ends), (path.name, row["step"])
            assert row["status"] in {"pending", "running", "waiting", "retrying", "completed",
                                     "failed", "awaiting_completion"}  # fmt: skip


def test_each_run_names_the_worker_that_recorded_its_outcome() -> None:
    """Outcomes name their worker; histories from before (the golden logs) read as null."""
    history = json.loads((GOLDEN / "order-payment-retry.json").read_text())
    assert all(r["worker"] is None for row in step_table(history) for r in row["runs"])
    ran_by = iter(["cerebelum-worker:a:1", "cerebelum-worker:b:2", "cerebelum-worker:b:2"])
    named = [
        {**e, "worker": next(ran_by)} if e["type"] == "StepFailed" or (
            e["type"] == "StepCompleted" and e["step"] == "charge") else e
        for e in history
    ]  # fmt: skip
    charge = {r["step"]: r for r in step_table(named)}["charge"]
    assert [r["worker"] for r in charge["runs"]] == [
        "cerebelum-worker:a:1", "cerebelum-worker:b:2", "cerebelum-worker:b:2"]  # fmt: skip
    assert charge["worker"] == "cerebelum-worker:b:2"
    assert charge["last_error"]["worker"] == "cerebelum-worker:b:2"


def test_a_step_completed_from_outside_is_one_run_per_token() -> None:
    history = json.loads((GOLDEN / "contract-external-completion.json").read_text())
    signature = {r["step"]: r for r in step_table(history)}["signature"]
    assert signature["status"] == "completed" and signature["attempts"] == 2
    assert [r["outcome"] for r in signature["runs"]] == ["failed", "completed"]
    assert signature["last_error"]["type"] == "Declined"
    waiting = {r["step"]: r for r in step_table(history[:10])}["signature"]
    assert waiting["status"] == "awaiting_completion"
    assert waiting["completion_deadline"] == history[9]["fire_at"]
    assert waiting["runs"][-1]["ended_at"] is None


def test_a_child_node_is_one_run_listing_its_children() -> None:
    history = json.loads((GOLDEN / "order-children.json").read_text())["o-7"]
    invoices = {r["step"]: r for r in step_table(history)}["invoices"]
    assert invoices["status"] == "completed"
    assert invoices["children"] == ["o-7.invoices.0", "o-7.invoices.1"]
    assert [r["kind"] for r in invoices["runs"]] == ["children"]
