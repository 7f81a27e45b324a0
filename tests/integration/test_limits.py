"""Concurrency and rate limits on the real services (decisions.md §20): a per-customer limit
that lets one execution run at a time, the rest queued and admitted in order; a step limited
to 3 runs per second per key."""

from __future__ import annotations

import asyncio

import pytest

from cerebelum.client import Client
from cerebelum.config import Settings
from cerebelum.core.limits import limiter_id
from tests.conftest import module_worker
from tests.helpers import assert_gapless, end_offsets, events_since

pytestmark = pytest.mark.integration


worker = module_worker("limits")


def overlaps(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Pairs of consecutive spans (sorted by start) that overlap."""
    spans = sorted(spans)
    return [(a[1], b[0]) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]


async def test_one_per_customer_runs_one_at_a_time_in_order(
    settings: Settings, worker: None, client: Client, unique
) -> None:
    since = await end_offsets(settings)
    customer, other = unique("cust"), unique("other")
    ids = [unique(f"opc-{k}") for k in range(5)]
    for k, eid in enumerate(ids):
        await client.start("one_per_customer", {"customer": customer, "n": k, "pause": 0.3}, eid)
    other_id = unique("opc-other")
    await client.start("one_per_customer", {"customer": other, "n": 9, "pause": 0.3}, other_id)
    results = await asyncio.gather(*(client.wait(e, timeout=60) for e in [*ids, other_id]))
    assert [r.status for r in results] == ["completed"] * 6
    spans = [(r.output["began"], r.output["ended"]) for r in results[:5]]
    assert overlaps(spans) == [], "two executions of one customer ran at once"

    lid = limiter_id("concurrency", "one_per_customer", customer)
    # The last one's permit goes back in the transaction that ends it: soon after its end.
    for _ in range(50):
        history = await events_since(settings, since, {*ids, lid})
        if [e["type"] for e in history[lid]].count("PermitReleased") == 5:
            break
        await asyncio.sleep(0.2)
    for eid in ids:
        types = [e["type"] for e in history[eid]]
        assert_gapless(history[eid])
        assert types[:3] == ["ExecutionStarted", "ExecutionQueued", "ExecutionAdmitted"], types
        assert types.count("ExecutionAdmitted") == 1
    limiter = [e["type"] for e in history[lid]]
    assert limiter.count("PermitGranted") == 5 and limiter.count("PermitReleased") == 5
    queued = [e["holder"] for e in history[lid] if e["type"] == "PermitQueued"]
    granted = [e["holder"] for e in history[lid] if e["type"] == "PermitGranted"]
    # Those that waited were admitted in the order they asked (they asked in start order:
    # one producer, and all of a customer's permits go through its one limiter).
    assert [h for h in granted if h in queued] == queued


async def test_a_step_limited_to_3_per_second_per_key(
    settings: Settings, worker: None, client: Client, unique
) -> None:
    since = await end_offsets(settings)
    key = unique("key")
    ids = [unique(f"rate-{k}") for k in range(7)]
    for k, eid in enumerate(ids):
        await client.start("rated_call", {"api_key": key, "n": k}, eid)
    elsewhere = unique("rate-other")  # another key is not held back by this one's window
    await client.start("rated_call", {"api_key": unique("key2"), "n": 0}, elsewhere)
    results = await asyncio.gather(*(client.wait(e, timeout=60) for e in [*ids, elsewhere]))
    assert [r.status for r in results] == ["completed"] * 8

    lid = limiter_id("rate", "call_partner", key)
    history = await events_since(settings, since, {*ids, lid})
    grants = [e["at"] for e in history[lid] if e["type"] == "PermitGranted"]
    assert len(grants) == 7
    for k in range(len(grants) - 3):  # any 4 grants in a row span at least the second
        assert grants[k + 3] - grants[k] >= 1000, grants
    runs = sorted(r.output["at"] for r in results[:7])
    assert runs[-1] - runs[0] >= 1.0  # 7 runs at 3 per second take two windows at least
    for eid in ids:
        types = [e["type"] for e in history[eid]]
        assert types.count("StepAdmitted") == 1 and types[-1] == "ExecutionCompleted"
