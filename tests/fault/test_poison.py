"""A step that kills its process on every attempt (os._exit, a segfault, the OOM killer) must not
take every worker that takes its partition down in turn (DESIGN.md, invariant 9).

Three workers. The first owner of the poison's partition dies running it; so does the second,
after re-dispatching it (StepRescheduled, redispatch 1). The third runs it isolated in a child
process (redispatch 2): the child dies, the step fails with StepCrashed, the execution fails
with a clear error, and every other execution of that partition completes.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from cerebelum.client import Client, partition_for
from cerebelum.config import Settings
from tests.conftest import Processes
from tests.helpers import assert_gapless, assert_results_recorded_once, end_offsets, events_since

pytestmark = [pytest.mark.integration, pytest.mark.fault]


def ids_on(partition: int, prefix: str, n: int) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        eid = f"{prefix}-{i}"
        if partition_for(eid) == partition:
            out.append(eid)
        i += 1
    return out


async def test_a_poison_step_fails_its_execution_not_the_cluster(
    settings: Settings, processes: Processes, client: Client, unique
) -> None:
    workers = [processes.worker() for _ in range(3)]
    await asyncio.sleep(8)  # three members joined and settled (KIP-848: seconds)
    since = await end_offsets(settings)
    pill = unique("pill")
    p = partition_for(pill)
    # Neighbours on the same partition: quick ones, and slow ones in flight across the crashes.
    quick = ids_on(p, unique("quick"), 10)
    slow = ids_on(p, unique("slow"), 5)
    acks = [
        await client.start_nowait("slow", {"n": i, "pause": 1.0}, e) for i, e in enumerate(slow)
    ]
    acks += [await client.start_nowait("poison", {}, pill)]
    acks += [await client.start_nowait("w3", {"n": i}, e) for i, e in enumerate(quick)]
    await asyncio.gather(*acks)

    started = time.monotonic()
    result = await client.wait(pill, timeout=120)
    took = time.monotonic() - started
    assert result.status == "failed" and result.error is not None
    assert result.error["type"] == "StepCrashed", result.error
    assert "died: exit code 3" in result.error["message"]

    others = await asyncio.gather(*(client.wait(e, timeout=120) for e in [*quick, *slow]))
    assert [r.status for r in others] == ["completed"] * len(others)
    dead = [w for w in workers if w.poll() is not None]
    assert len(dead) == 2 and all(w.returncode == 3 for w in dead), [w.poll() for w in workers]

    history = await events_since(settings, since, {pill, *quick, *slow})
    for events in history.values():
        assert_gapless(events)
        assert_results_recorded_once(events)
    kinds = [(e["type"], e.get("attempt"), e.get("redispatch")) for e in history[pill]]
    assert kinds == [
        ("ExecutionStarted", None, None),
        ("StepScheduled", 1, None),
        ("StepRescheduled", 2, 1),
        ("StepRescheduled", 3, 2),
        ("StepFailed", 3, None),
        ("ExecutionFailed", None, None),
    ], kinds
    print(f"\npoison: two workers died, the third failed the execution after {took:.1f} s")
