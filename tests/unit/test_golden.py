"""Golden event logs: the examples' histories, replayed on every run.

A change to the state machine's semantics shows up here as a diff. When the change is meant,
regenerate with `UPDATE_GOLDEN=1 pytest tests/unit/test_golden.py` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cerebelum.core.apply import fold
from cerebelum.core.commands import Recover, SendSignal, StartExecution
from cerebelum.core.machine import decide
from cerebelum.core.rules import RetryPolicy
from cerebelum.core.workflow import Registry, StepContext, Workflow, approval, children, step
from examples.order import charge, order, reserve, review, validate
from examples.polling import poll_job
from tests.sim import START, drive, simulate

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def golden(name: str, log: Any) -> Any:
    """The recorded log `name`, asserted equal to `log` (rewritten first under UPDATE_GOLDEN)."""
    path = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(json.dumps(log, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(path.read_text())
    assert log == recorded
    return recorded


REGISTRY = Registry([order, poll_job])
ITEMS = [{"sku": "tea", "qty": 2, "price": 4.5}]
BIG = [{"sku": "piano", "qty": 1, "price": 2500.0}]

SCENARIOS: dict[str, dict[str, Any]] = {
    "order-small": {"workflow": "order", "inputs": {"order_id": "o-1", "items": ITEMS}},
    "order-payment-retry": {
        "workflow": "order",
        "inputs": {"order_id": "o-2", "items": ITEMS, "provider_down_attempts": 2},
    },
    "order-approved": {
        "workflow": "order",
        "inputs": {"order_id": "o-3", "items": BIG},
        "signals": {"approval": [{"approved": True, "by": "ana"}]},
    },
    "order-rejected": {
        "workflow": "order",
        "inputs": {"order_id": "o-4", "items": BIG},
        "signals": {"approval": [{"approved": False, "by": "ana"}]},
    },
    "order-invalid": {"workflow": "order", "inputs": {"order_id": "o-5", "items": []}},
    "poll-job": {"workflow": "poll_job", "inputs": {"job": "j-1", "ready_after": 3}},
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden_log(name: str) -> None:
    sc = SCENARIOS[name]
    state, log = simulate(REGISTRY, sc["workflow"], sc["inputs"], signals=sc.get("signals"))
    recorded = golden(name, log)
    assert fold(recorded) == state  # replaying the recorded log gives the same state


# --- versions (decisions.md §6) ---------------------------------------------------------------
# A deploy replaces `order` with a v2 of another shape, while an order waits for its approval.


@step
def notify(validate: dict) -> dict:
    return {"notified": validate["order_id"]}


@step
def dispatch(validate: dict, approval: dict | None) -> dict:
    return {"order_id": validate["order_id"], "status": "dispatched",
            "approved_by": (approval or {}).get("by", "auto")}  # fmt: skip


def order_v2(migrate: bool) -> Workflow:
    mapping = {"validate": "validate", "reserve": "reserve", "charge": "charge",
               "review": "review", "approval": "approval", "ship": "dispatch"}  # fmt: skip
    return Workflow(
        "order",
        validate
        >> [reserve, charge]
        >> review
        >> approval("approval", timeout=24 * 3600)
        >> notify
        >> dispatch,
        version="2",
        migrate_from={order.version: mapping} if migrate else None,
    )


def deployed(migrate: bool) -> tuple[Any, list[dict[str, Any]]]:
    """An order parked at its approval under the examples' order; then a worker with only v2
    (`migrate`: v2 declares a mapping from it) touches it, an approval arrives, and (without
    `migrate`) a worker with the old version again takes it over."""
    state, log, effects = decide(
        None, StartExecution("e-1", "order", {"order_id": "o-6", "items": BIG}), START, REGISTRY
    )
    state, log, now = drive(REGISTRY, state, log, effects, START, stop=lambda s: bool(s.waiting))
    v2 = Registry([order_v2(migrate)])
    for command in (Recover("e-1"), SendSignal("e-1", "approval", {"approved": True, "by": "ana"})):
        now += 1
        state, events, effects = decide(state, command, now, v2)
        log += events
    if migrate:
        return drive(v2, state, log, effects, now)[:2]
    now += 1
    state, events, effects = decide(state, Recover("e-1"), now, REGISTRY)
    return drive(REGISTRY, state, log + events, effects, now)[:2]


@pytest.mark.parametrize("name", ["order-blocked-resumed", "order-migrated"])
def test_golden_versions_log(name: str) -> None:
    state, log = deployed(migrate=name == "order-migrated")
    assert state.status == "completed"
    recorded = golden(name, log)
    assert fold(recorded) == state


# --- external completion (decisions.md §17) -----------------------------------------------------
# A contract goes out for signature: the signing service declines once (retried: a new run,
# a new token), then signs.


@step
def draft(inputs: dict) -> dict:
    return {"contract": inputs["contract"]}


@step(retry=RetryPolicy(max_attempts=3, initial_interval=60, backoff=1.0, jitter=0))
def signature(ctx: StepContext, draft: dict) -> Any:
    return ctx.pending(timeout=7 * 24 * 3600)  # the token goes to the signing service


@step
def countersign(signature: dict) -> dict:
    return {"contract": "c-1", "signed_by": signature["signed_by"]}


def test_golden_external_completion_log() -> None:
    wf = Workflow("contract", draft >> signature >> countersign, version="1")
    completions = {
        "signature": [(False, {"type": "Declined", "message": "typo in clause 3"}),
                      (True, {"signed_by": "ana"})],
    }  # fmt: skip
    state, log = simulate(Registry([wf]), "contract", {"contract": "c-1"}, completions=completions)
    assert state.status == "completed" and state.output == {"contract": "c-1", "signed_by": "ana"}
    recorded = golden("contract-external-completion", log)
    assert fold(recorded) == state


# --- child workflows (decisions.md §18) -----------------------------------------------------------
# An order bills each of its lines as a child execution (a fan-out), then ships: the parent's
# history and its children's, as a cluster of executions sends them to each other.


@step
def bill_line(inputs: dict) -> dict:
    return {"sku": inputs["sku"], "billed": inputs["qty"] * inputs["price"]}


@step
def ship_billed(invoices: list) -> dict:
    return {"shipped": True, "total": sum(i["billed"] for i in invoices)}


def test_golden_child_workflow_logs() -> None:
    from tests.cluster_sim import Cluster

    line = Workflow("bill_line", [bill_line], version="1")
    parent = Workflow(
        "billed_order",
        children("bill_line", each=lambda inputs: inputs["items"], name="invoices") >> ship_billed,
        version="1",
    )
    cluster = Cluster(Registry([line, parent]))
    cluster.start("o-7", "billed_order", {"items": ITEMS + BIG})
    cluster.run_until_quiet()
    assert cluster.states["o-7"].output == {"shipped": True, "total": 2509.0}
    logs = {eid: cluster.logs[eid] for eid in sorted(cluster.logs)}
    recorded = golden("order-children", logs)
    for eid, log in recorded.items():
        assert fold(log) == cluster.states[eid]


# --- schedules (decisions.md §19) ---------------------------------------------------------------
# Every 60 s: three ticks, paused (a tick passes), triggered by hand, resumed, one more tick.


def test_golden_schedule_log() -> None:
    from cerebelum.core.commands import SendSignal, StartExecution
    from tests.cluster_sim import Cluster

    cluster = Cluster(REGISTRY)
    cluster.now = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    sid = "schedule.tea-orders"
    spec = {"name": "tea-orders", "workflow": "order", "every_s": 60,
            "inputs": {"order_id": "o-s", "items": ITEMS}}  # fmt: skip

    cluster.send(StartExecution(sid, "cerebelum.schedule", spec))
    cluster.run_until(cluster.now + 3 * 60_000 + 10)
    cluster.send(SendSignal(sid, "pause", None))
    cluster.run_until(cluster.now + 60_000)
    cluster.send(SendSignal(sid, "trigger", None))
    cluster.send(SendSignal(sid, "resume", None))
    cluster.run_until(cluster.now + 60_000)
    log = cluster.logs[sid]
    assert [e["type"] for e in log].count("ScheduleFired") == 5
    recorded = golden("schedule", log)
    assert fold(recorded) == cluster.states[sid]
