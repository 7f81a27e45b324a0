"""Concurrency and rate limits in the pure core (decisions.md §20): limiter executions that
grant permits in order, holders that wait for them as queued, and give them back when they end."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cerebelum.core import events as ev
from cerebelum.core.apply import fold
from cerebelum.core.commands import (
    CancelExecution,
    Permit,
    Recover,
    SendSignal,
    StartExecution,
    parse_command,
)
from cerebelum.core.limits import MAX_QUEUE, limiter_id
from cerebelum.core.machine import MAX_HISTORY, decide
from cerebelum.core.state import BLOCKED, COMPLETED, QUEUED, RUNNING, TERMINAL
from cerebelum.core.workflow import RateLimit, Registry, Workflow, approval, step
from cerebelum.errors import InvalidCommand, WorkflowDefinitionError
from cerebelum.mirror.fold import decode_event
from cerebelum.mirror.fold import fold as mirror_fold
from tests.cluster_sim import Cluster

T0 = 1_700_000_000_000


@step
def work(inputs: dict) -> dict:
    return {"customer": inputs["customer"]}


@step(rate_limit=RateLimit(2, per_s=1.0, key="customer"))
def call_api(inputs: dict) -> str:
    return f"called for {inputs['customer']}"


# Holds its permit until signalled, so the test decides when each one ends.
ONE_PER_CUSTOMER = Workflow(
    "order", work >> approval("done"), concurrency_key="customer", concurrency_limit=1
)
TWO_PER_CUSTOMER = Workflow(
    "batch", work >> approval("done"), concurrency_key=lambda i: i["customer"], concurrency_limit=2
)
RATED = Workflow("rated", [call_api])


def cluster() -> Cluster:
    c = Cluster(Registry([ONE_PER_CUSTOMER, TWO_PER_CUSTOMER, RATED]))
    c.now = T0
    return c


def mirrored_status(log: list[dict]) -> str | None:
    rows = [decode_event(orjson.dumps(e), 0, k) for k, e in enumerate(log)]
    return mirror_fold(rows)[0].status


def statuses(c: Cluster, ids: list[str]) -> list[str]:
    return [c.states[i].status for i in ids]


def test_one_per_key_the_rest_queued_in_order_then_admitted_as_each_ends() -> None:
    c = cluster()
    ids = [f"o-{k}" for k in range(4)]
    for i in ids:
        c.start(i, "order", {"customer": "c-42"})
    c.start("other", "order", {"customer": "c-7"})  # another key: its own limit
    c.run_until_quiet()
    assert statuses(c, ids) == ["waiting", QUEUED, QUEUED, QUEUED]
    assert c.states["other"].status == "waiting"
    limiter = c.states[limiter_id("concurrency", "order", "c-42")]
    assert limiter.results["holders"] == [["o-0", None, None]]
    assert [q[0] for q in limiter.results["queue"]] == ["o-1", "o-2", "o-3"]
    for k, i in enumerate(ids):
        c.send(SendSignal(i, "done", {"k": k}))
        c.run_until_quiet()
        assert c.states[i].status == COMPLETED
        if k + 1 < len(ids):
            assert c.states[ids[k + 1]].status == "waiting"  # admitted, next in line
    # Admitted in the order they were queued, each after the previous ended.
    admitted = [
        next(e["at"] for e in c.logs[i] if e["type"] == ev.EXECUTION_ADMITTED) for i in ids[1:]
    ]
    ended = [c.logs[i][-1]["at"] for i in ids[:-1]]
    assert admitted == sorted(admitted)
    assert all(a > e for a, e in zip(admitted, ended, strict=True))
    assert c.states[limiter.id].results["holders"] == []


def test_a_limit_of_two_lets_two_run() -> None:
    c = cluster()
    ids = [f"b-{k}" for k in range(3)]
    for i in ids:
        c.start(i, "batch", {"customer": "c-1"})
    c.run_until_quiet()
    assert statuses(c, ids) == ["waiting", "waiting", QUEUED]


def test_cancelling_a_queued_execution_leaves_the_queue_and_a_running_one_frees_its_place() -> None:
    c = cluster()
    for i in ("a", "b", "c"):
        c.start(i, "order", {"customer": "k"})
    c.run_until_quiet()
    c.send(CancelExecution("b", "not needed"))
    c.run_until_quiet()
    lid = limiter_id("concurrency", "order", "k")
    assert [q[0] for q in c.states[lid].results["queue"]] == ["c"]
    c.send(CancelExecution("a", "stop"))
    c.run_until_quiet()
    assert statuses(c, ["a", "b", "c"]) == ["cancelled", "cancelled", "waiting"]
    assert c.states[lid].results["holders"] == [["c", None, None]]


def test_a_failed_execution_gives_its_permit_back() -> None:
    @step
    def boom(inputs: dict) -> None:
        raise ValueError("no")

    wf = Workflow("fragile", [boom], concurrency_key="k")
    c = Cluster(Registry([wf]))
    c.start("f-1", "fragile", {"k": "x"})
    c.start("f-2", "fragile", {"k": "x"})
    c.run_until_quiet()
    assert statuses(c, ["f-1", "f-2"]) == ["failed", "failed"]
    assert c.states["concurrency.fragile.x"].results["holders"] == []


def test_inputs_without_the_key_fail_clearly_and_hold_nothing() -> None:
    c = cluster()
    c.start("nokey", "order", {"client": "x"})
    c.run_until_quiet()
    s = c.states["nokey"]
    assert s.status == "failed" and s.error is not None
    assert s.error["type"] == "ConcurrencyKeyError"
    assert "no field 'customer'" in s.error["message"]
    assert not [k for k in c.states if k.startswith("concurrency.")]


def test_rate_limit_grants_at_most_n_per_window_the_rest_on_a_timer() -> None:
    c = cluster()
    ids = [f"r-{k}" for k in range(5)]
    for i in ids:
        c.start(i, "rated", {"customer": "acme"})
    c.run_until_quiet(fire_timers=False)
    assert statuses(c, ids) == [COMPLETED, COMPLETED, QUEUED, QUEUED, QUEUED]
    c.run_until_quiet()  # the limiter's window timers
    assert statuses(c, ids) == [COMPLETED] * 5
    lid = limiter_id("rate", "call_api", "acme")
    grants = [e["at"] for e in c.logs[lid] if e["type"] == ev.PERMIT_GRANTED]
    assert len(grants) == 5
    for k in range(len(grants) - 2):  # any 3 consecutive grants span at least the window
        assert grants[k + 2] - grants[k] >= 1000
    for i in ids:  # the run waited for its permit: StepAdmitted between scheduled and done
        types = [e["type"] for e in c.logs[i]]
        assert types[1:4] == [ev.STEP_SCHEDULED, ev.STEP_ADMITTED, ev.STEP_COMPLETED]


def test_an_execution_that_ends_while_its_step_waits_leaves_the_rate_queue() -> None:
    c = cluster()
    for k in range(3):
        c.start(f"r-{k}", "rated", {"customer": "acme"})
    c.run_until_quiet(fire_timers=False)
    c.send(CancelExecution("r-2", "no longer"))
    c.run_until_quiet(fire_timers=False)
    assert c.states[limiter_id("rate", "call_api", "acme")].results["queue"] == []


def test_the_wire_format_round_trips_and_bad_permits_are_refused() -> None:
    raw = Permit("rate.s.k", "acquire", "e-1", "s", 7, 3, 1000).encode()
    p = parse_command(raw)
    assert isinstance(p, Permit)
    fields = (p.op, p.holder, p.step, p.token, p.limit, p.per_ms)
    assert fields == ("acquire", "e-1", "s", 7, 3, 1000)
    grant = parse_command(Permit("e-1", "grant", "e-1", limiter="concurrency.w.k").encode())
    assert isinstance(grant, Permit) and grant.limiter == "concurrency.w.k"
    for body, reason in [
        ({"op": "take"}, "'op'"),
        ({"op": "acquire", "step": "s"}, "'token'"),
        ({"op": "acquire", "limit": 0}, "'limit'"),
        ({"op": "acquire", "per_ms": "1s"}, "'per_ms'"),
        ({"op": "grant"}, "limiter"),
    ]:
        value = {"type": "Permit", "execution_id": "x", "holder": "e", **body}
        with pytest.raises(InvalidCommand, match=reason):
            parse_command(orjson.dumps(value))


def test_limiters_take_no_start_signal_or_cancel_and_permits_go_only_to_limiter_ids() -> None:
    c = cluster()
    c.start("o-1", "order", {"customer": "c"})
    c.run_until_quiet()
    lid = limiter_id("concurrency", "order", "c")
    reg = c.registry
    state = c.states[lid]
    for command in (
        StartExecution("concurrency.x.y", "cerebelum.limiter", {}),
        SendSignal(lid, "done", None),
        CancelExecution(lid, "why"),
    ):
        with pytest.raises(InvalidCommand):
            decide(state if command.execution_id == lid else None, command, T0, reg)
    with pytest.raises(InvalidCommand, match="no limiter"):
        decide(None, Permit("order-9", "acquire", "h"), T0, reg)
    with pytest.raises(InvalidCommand, match="no limiter"):
        decide(c.states["o-1"], Permit("o-1", "acquire", "h"), T0, reg)


def test_a_users_start_may_not_take_a_limiters_or_a_schedules_id() -> None:
    c = cluster()
    for eid in ("concurrency.order.c", "rate.call_api.acme", "schedule.nightly"):
        with pytest.raises(InvalidCommand, match="reserved for schedules and limiters"):
            decide(None, StartExecution(eid, "order", {"customer": "c"}), T0, c.registry)
    # Not a prefix of the id: an id that merely contains one is anybody's.
    state, events, _ = decide(None, StartExecution("my.rate.x", "order", {}), T0, c.registry)
    assert state is not None and events[0]["type"] == "ExecutionStarted"


def test_a_full_queue_denies_and_the_holder_fails_with_limit_exceeded() -> None:
    c = cluster()
    lid = limiter_id("concurrency", "order", "c")
    c.start("o-0", "order", {"customer": "c"})
    c.run_until_quiet()
    state = c.states[lid].copy()
    queue = [[f"q-{k}", None, None] for k in range(MAX_QUEUE)]
    state.results = {**state.results, "queue": queue}
    _, events, effects = decide(state, Permit(lid, "acquire", "late"), T0 + 5, c.registry)
    assert [e["type"] for e in events] == [ev.PERMIT_DENIED]
    grant = parse_command(effects[0].value)  # type: ignore[union-attr]
    c.start("late", "order", {"customer": "c"})
    c.run_until_quiet()
    assert isinstance(grant, Permit) and grant.denied
    s, _, _ = decide(c.states["late"].copy(), grant, T0 + 6, c.registry)
    # "late" was queued behind o-0 in this cluster; the grant denied to it fails it.
    assert s is not None and s.status == "failed" and s.error["type"] == "LimitExceeded"


def test_a_raised_limit_admits_the_next_in_line_at_once() -> None:
    c = cluster()
    for i in ("a", "b", "c"):
        c.start(i, "order", {"customer": "k"})
    c.run_until_quiet()
    bigger = Workflow(
        "order", work >> approval("done"), concurrency_key="customer", concurrency_limit=3,
        version=ONE_PER_CUSTOMER.version,
    )  # fmt: skip
    c.registry = Registry([bigger])
    c.start("d", "order", {"customer": "k"})  # its acquire carries the new limit
    c.run_until_quiet()
    assert statuses(c, ["a", "b", "c", "d"]) == ["waiting", "waiting", "waiting", QUEUED]


def test_a_permit_granted_while_blocked_is_kept_and_the_run_goes_on_when_it_resumes() -> None:
    c = cluster()
    c.start("a", "order", {"customer": "k"})
    c.start("b", "order", {"customer": "k"})
    c.run_until_quiet()
    full = c.registry
    c.registry = Registry([TWO_PER_CUSTOMER, RATED])  # a worker without "order"
    c.send(SendSignal("b", "done", "early"))  # b is held: blocked, its signal kept
    c.run_until_quiet()
    assert c.states["b"].status == BLOCKED
    c.registry = full
    c.decide(SendSignal("a", "done", "x"))  # a ends on a worker with "order"...
    c.decide(c.inbox.popleft())  # ...its limiter grants b...
    c.registry = Registry([TWO_PER_CUSTOMER, RATED])
    c.run_until_quiet()  # ...while b sits on a worker without it
    b = c.states["b"]
    assert b.status == BLOCKED and b.blocked is not None and b.blocked["status"] == RUNNING
    c.registry = full
    c.send(Recover("b"))  # a worker with "order" takes b's partition: it resumes
    c.run_until_quiet()
    assert c.states["b"].status == COMPLETED
    assert c.states["b"].output == "early"  # the signal kept while blocked


def test_the_mirror_shows_queued_then_running() -> None:
    c = cluster()
    c.start("a", "order", {"customer": "k"})
    c.start("b", "order", {"customer": "k"})
    c.run_until_quiet()
    assert mirrored_status(c.logs["b"]) == QUEUED
    c.send(SendSignal("a", "done", 1))
    c.run_until_quiet()
    assert mirrored_status(c.logs["b"]) == "waiting"


def test_limiters_are_exempt_from_the_history_limit() -> None:
    c = cluster()
    c.start("a", "order", {"customer": "k"})
    c.run_until_quiet()
    lid = limiter_id("concurrency", "order", "k")
    state = c.states[lid].copy()
    state.version = MAX_HISTORY + 5
    s, events, _ = decide(state, Permit(lid, "release", "a"), T0, c.registry)
    assert s is not None and s.status == RUNNING
    assert [e["type"] for e in events] == [ev.PERMIT_RELEASED]


def test_long_or_odd_keys_give_valid_limiter_ids() -> None:
    assert limiter_id("concurrency", "order", "c-42") == "concurrency.order.c-42"
    odd = limiter_id("concurrency", "order", "ana lópez/ä")
    assert odd.startswith("concurrency.order.") and len(odd) < 200
    assert limiter_id("rate", "s", "x" * 300) != limiter_id("rate", "s", "x" * 301)


def test_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="whole number"):
        RateLimit(0)
    with pytest.raises(ValueError, match="per_s"):
        RateLimit(1, per_s=0)
    with pytest.raises(WorkflowDefinitionError, match="concurrency_limit"):
        Workflow("w", [work], concurrency_key="k", concurrency_limit=0)
    with pytest.raises(WorkflowDefinitionError, match="concurrency_key"):
        Workflow("w", [work], concurrency_key=3)  # type: ignore[arg-type]
    # A limit is not part of the shape: changing it keeps the version.
    assert Workflow("w", [work]).version == Workflow("w", [work], concurrency_key="k").version
    graph = ONE_PER_CUSTOMER.graph()
    assert graph["concurrency"] == {"key": "customer", "limit": 1}
    assert RATED.graph()["nodes"][0]["rate_limit"] == {
        "limit": 2, "per_s": 1.0, "key": "customer", "name": "call_api"}  # fmt: skip


# -- property: the limit holds whatever the interleaving -------------------------------------

Op = tuple[str, int]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limit=st.integers(1, 3),
    ops=st.lists(
        st.tuples(st.sampled_from(["start", "finish", "cancel", "deliver"]), st.integers(0, 7)),
        max_size=60,
    ),
)
def test_live_admitted_executions_never_exceed_the_limit_and_admission_is_fifo(
    limit: int, ops: list[Op]
) -> None:
    wf = Workflow("w", work >> approval("done"), concurrency_key="customer",
                  concurrency_limit=limit)  # fmt: skip
    c = Cluster(Registry([wf]))
    c.now = T0
    started: list[str] = []
    asked: set[str] = set()  # told to end once (a second cancel of an ended one is refused)
    lid = limiter_id("concurrency", "w", "k")

    def check() -> None:
        admitted = [
            i for i in started
            if i in c.states and c.states[i].status not in TERMINAL | {QUEUED}
        ]  # fmt: skip
        assert len(admitted) <= limit
        for i in started:  # each execution's log folds to its state
            if i in c.states:
                assert fold(c.logs[i]) == c.states[i]
        if lid in c.states:
            holders = {h[0] for h in c.states[lid].results["holders"]}
            assert set(admitted) <= holders

    for kind, n in ops:
        if kind == "start":
            eid = f"e-{len(started)}"
            started.append(eid)
            c.start(eid, "w", {"customer": "k"})
        elif started and kind in ("finish", "cancel"):
            eid = started[n % len(started)]
            s = c.states.get(eid)
            if s is not None and not s.terminal and eid not in asked:
                if kind == "cancel":
                    asked.add(eid)
                    c.send(CancelExecution(eid, "test"))
                elif s.status == "waiting":
                    asked.add(eid)
                    c.send(SendSignal(eid, "done", None))
        # Deliver some of what is in flight, in order (a partial, interleaved delivery).
        for _ in range(n if kind == "deliver" else 1):
            if c.inbox:
                c.decide(c.inbox.popleft())
                check()
    c.run_until_quiet()
    check()
    # Drain: finish whoever runs until nobody is left; every live one gets admitted in turn.
    order: list[str] = []
    for _ in range(len(started) + 1):
        live = [i for i in started if c.states.get(i) and c.states[i].status == "waiting"
                and i not in asked]  # fmt: skip
        for i in live:
            order.append(i)
            asked.add(i)
            c.send(SendSignal(i, "done", None))
        c.run_until_quiet()
        check()
    assert all(c.states[i].terminal for i in started if i in c.states)
    admitted_at = {
        i: next((e["version"] for e in c.logs[i] if e["type"] == ev.EXECUTION_ADMITTED), None)
        for i in started
    }
    queued_order = [e["holder"] for e in c.logs.get(lid, []) if e["type"] == ev.PERMIT_QUEUED]
    granted_order = [e["holder"] for e in c.logs.get(lid, []) if e["type"] == ev.PERMIT_GRANTED]
    # FIFO: those that waited in the queue were granted in the order they were queued.
    waited = [h for h in granted_order if h in queued_order]
    assert waited == [h for h in queued_order if h in waited]
    cancelled = {i for i in started if c.states[i].status == "cancelled"}
    assert all(admitted_at[i] is not None for i in waited if i not in cancelled)


def test_the_api_names_what_a_queued_execution_waits_for() -> None:
    from cerebelum.api.steps import queued_on

    c = cluster()
    c.start("a", "order", {"customer": "k"})
    c.start("b", "order", {"customer": "k"})
    for k in range(3):
        c.start(f"r-{k}", "rated", {"customer": "acme"})
    c.run_until_quiet(fire_timers=False)
    assert queued_on(c.logs["b"]) == {
        "limiter": "concurrency.order.k", "key": "k", "step": None}  # fmt: skip
    assert queued_on(c.logs["r-2"]) == {
        "limiter": "rate.call_api.acme", "key": None, "step": "call_api"}  # fmt: skip


# -- a start of a workflow this worker lacks and another live worker runs (decisions.md §6) --


def test_a_start_of_a_workflow_only_other_workers_run_is_held_then_starts_where_it_is() -> None:
    from cerebelum.core.commands import Recover
    from cerebelum.errors import UnknownWorkflow

    lacking = Registry([RATED])
    with pytest.raises(UnknownWorkflow):  # nobody runs it: refused at once, as before
        decide(None, StartExecution("o-1", "order", {"customer": "k"}), T0, lacking)
    lacking.elsewhere = {"order": ONE_PER_CUSTOMER.version}
    c = Cluster(lacking)
    c.now = T0
    c.start("o-1", "order", {"customer": "k"})
    c.start("o-2", "order", {"customer": "k"})
    c.run_until_quiet()
    held = c.states["o-1"]
    assert held.status == BLOCKED and held.workflow_version == ONE_PER_CUSTOMER.version
    assert held.blocked is not None and "other live workers" in held.blocked["reason"]
    c.registry = Registry([ONE_PER_CUSTOMER, RATED])  # a worker with it takes the partition
    c.send(Recover("o-1"))
    c.send(Recover("o-2"))
    c.run_until_quiet()
    # It begins as a start would have: queued on its limit, then admitted.
    assert statuses(c, ["o-1", "o-2"]) == ["waiting", QUEUED]
    types = [e["type"] for e in c.logs["o-1"]]
    assert types[:5] == [ev.EXECUTION_STARTED, ev.EXECUTION_BLOCKED, ev.EXECUTION_RESUMED,
                         ev.EXECUTION_QUEUED, ev.EXECUTION_ADMITTED]  # fmt: skip
    c.send(SendSignal("o-1", "done", 1))
    c.send(SendSignal("o-2", "done", 2))  # o-2 is queued: kept, taken once it waits
    c.run_until_quiet()
    assert statuses(c, ["o-1", "o-2"]) == [COMPLETED, COMPLETED]


def test_a_held_start_begins_on_whichever_version_the_worker_that_takes_it_has() -> None:
    from cerebelum.core.commands import Recover

    lacking = Registry([RATED])
    lacking.elsewhere = {"order": "an-older-version"}
    start = StartExecution("o-1", "order", {"customer": "k"})
    s, events, _ = decide(None, start, T0, lacking)
    assert s is not None and s.status == BLOCKED and s.workflow_version == "an-older-version"
    c = Cluster(Registry([ONE_PER_CUSTOMER]))
    c.now = T0
    c.states["o-1"], c.logs["o-1"] = s, list(events)
    c.send(Recover("o-1"))
    c.run_until_quiet()
    began = c.states["o-1"]
    assert began.status == "waiting" and began.workflow_version == ONE_PER_CUSTOMER.version
    resumed = next(e for e in c.logs["o-1"] if e["type"] == ev.EXECUTION_RESUMED)
    assert resumed["workflow_version"] == ONE_PER_CUSTOMER.version
