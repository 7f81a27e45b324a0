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
from cerebelum.core.workflow import Registry
from examples.order import order
from examples.polling import poll_job
from tests.sim import simulate

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
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
    path = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(json.dumps(log, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(path.read_text())
    assert log == recorded
    assert fold(recorded) == state  # replaying the recorded log gives the same state
