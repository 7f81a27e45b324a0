"""The workflows every test worker runs. Workers of one group should run the same app (a worker
that lacks a workflow holds the starts of it that land on its partitions until a worker with it
owns them), so tests share this one module."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from cerebelum import Workflow, step
from cerebelum.core.workflow import Step
from examples.order import order  # noqa: F401  (registered by being a module global)


# W3, the standard benchmark workload. Async steps: a plain `def` step costs a thread-pool
# hand-off per run, which would measure the pool rather than the engine.
@step
async def step1(inputs: dict) -> dict:
    return {"n": inputs["n"] + 1}


@step
async def step2(step1: dict) -> dict:
    return {"n": step1["n"] * 2}


@step
async def step3(step2: dict) -> dict:
    return step2


w3 = Workflow("w3", step1 >> step2 >> step3)


@step
async def slow_a(inputs: dict) -> dict:
    import asyncio

    await asyncio.sleep(inputs.get("pause", 0.2))
    return {"a": inputs["n"]}


@step
def slow_b(inputs: dict, slow_a: dict) -> dict:
    time.sleep(inputs.get("pause", 0.2))  # a plain step: runs in the thread pool
    return {"b": slow_a["a"] + 1}


@step
async def slow_c(inputs: dict, slow_b: dict) -> dict:
    import asyncio

    await asyncio.sleep(inputs.get("pause", 0.2))
    return {"c": slow_b["b"] * 10}


slow = Workflow("slow", slow_a >> slow_b >> slow_c)


# --- the language's features, for the integration tests ---------------------------------------

from cerebelum import (  # noqa: E402
    RetryPolicy,
    StepContext,
    approval,
    back_to,
    branch,
    child,
    children,
    diverge,
    fail,
    sleep,
    wait_for_signal,
)
from examples.polling import poll_job  # noqa: E402,F401


@step
def begin(inputs: dict) -> dict:
    return {"n": inputs.get("n", 0), "pause": inputs.get("pause", 0.5)}


@step
async def left(begin: dict) -> dict:
    import asyncio

    await asyncio.sleep(begin["pause"])
    return {"left": begin["n"] + 1}


@step
def right(begin: dict) -> dict:
    time.sleep(begin["pause"])
    return {"right": begin["n"] + 2}


@step
def join(left: dict, right: dict) -> dict:
    return {"sum": left["left"] + right["right"]}


fanout = Workflow("fanout", begin >> [left, right] >> join)


@step
def nap_start(inputs: dict) -> dict:
    return {"n": inputs["n"]}


@step
def nap_end(nap_start: dict) -> dict:
    return {"n": nap_start["n"], "woke": True}


napper = Workflow("napper", nap_start >> sleep(3, name="nap") >> nap_end)


@step
def ask(inputs: dict) -> dict:
    return {"amount": inputs["amount"]}


@step
def after_approval(ask: dict, decision: dict) -> dict:
    return {"amount": ask["amount"], "by": decision["by"]}


approver = Workflow(
    "approver",
    ask >> approval("decision", timeout=300) >> after_approval,
    rules=[diverge("decision", when=lambda r: not r.get("approved"), then=fail("rejected"))],
)


@step
def listen(inputs: dict) -> dict:
    return inputs


@step
def heard(ping: object) -> dict:
    return {"ping": ping}


waiter = Workflow(
    "waiter", listen >> wait_for_signal("ping", timeout=2, on_timeout=fail()) >> heard
)


class Flaky(Exception):
    pass


@step(retry=RetryPolicy(max_attempts=4, initial_interval=0.2, backoff=2.0, jitter=0))
def flaky(ctx: StepContext, inputs: dict) -> dict:
    if ctx.attempt < inputs["succeed_on"]:
        raise Flaky(f"attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


retrier = Workflow("retrier", [flaky])


@step(timeout=0.3)
async def too_slow(inputs: dict) -> dict:
    import asyncio

    await asyncio.sleep(5)
    return {}


timeouts = Workflow("timeouts", [too_slow])


# A step that beats, then hangs on its first attempt: given up at its heartbeat timeout and
# retried; the retry finishes at once.
@step(heartbeat_timeout=0.5, retry=RetryPolicy(max_attempts=2, initial_interval=0.1, jitter=0))
async def beater(ctx: StepContext, inputs: dict) -> dict:
    ctx.heartbeat({"attempt": ctx.attempt})
    if ctx.attempt == 1:
        await asyncio.sleep(60)
    return {"attempt": ctx.attempt}


heartbeats = Workflow("heartbeats", [beater])


# Two steps that run until their execution is cancelled, each leaving a file in
# inputs["marker"] (a directory) when it starts and when it was stopped.
@step
async def runs_long(inputs: dict) -> dict:
    marker = Path(inputs["marker"])
    (marker / "async-started").touch()
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        (marker / "async-cancelled").touch()
        raise
    return {}


@step
def runs_long_plain(ctx: StepContext, inputs: dict) -> dict:
    marker = Path(inputs["marker"])
    (marker / "plain-started").touch()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ctx.cancelled:
        time.sleep(0.05)
    if ctx.cancelled:
        (marker / "plain-saw-cancelled").touch()
    return {}


long_runner = Workflow("long_runner", [[runs_long, runs_long_plain]])


# External completion: the step hands its token to "another system" (a file in
# inputs["marker"]) and returns ctx.pending(); the test completes it.
@step(retry=RetryPolicy(max_attempts=2, initial_interval=0.1, jitter=0))
def hand_off(ctx: StepContext, inputs: dict) -> object:
    (Path(inputs["marker"]) / f"token-{ctx.attempt}").write_text(ctx.completion_token)
    return ctx.pending(timeout=inputs.get("timeout", 60))


@step
def after_hand_off(hand_off: dict) -> dict:
    return {"signed_by": hand_off["signed_by"]}


handoff = Workflow("handoff", hand_off >> after_hand_off)


@step
def count(ctx: StepContext, inputs: dict) -> dict:
    return {"i": ctx.iteration}


looper = Workflow(
    "looper",
    [count],
    rules=[branch(count, when=lambda r: r["i"] < 3, then=back_to(count))],
    max_iterations=10,
)
runaway = Workflow(
    "runaway",
    [Step(count.fn, name="spin")],
    rules=[branch("spin", when=lambda r: True, then=back_to("spin"))],
    max_iterations=5,
)


@step
def big_result(inputs: dict) -> str:
    return "x" * inputs["size"]


big = Workflow("big", [big_result])


# --- failover tests (tests/fault/test_failover.py): steps, a durable sleep and a fan-out ------


@step
async def fo_fetch(inputs: dict) -> dict:
    import asyncio

    await asyncio.sleep(inputs.get("pause", 0.2))
    return {"n": inputs["n"]}


@step
async def fo_left(fo_fetch: dict, inputs: dict) -> dict:
    import asyncio

    await asyncio.sleep(inputs.get("pause", 0.2))
    return {"left": fo_fetch["n"] + 1}


@step
def fo_right(fo_fetch: dict) -> dict:
    time.sleep(0.02)  # a plain step: runs in the thread pool
    return {"right": fo_fetch["n"] + 2}


@step
def fo_join(inputs: dict, fo_left: dict, fo_right: dict) -> dict:
    return {"n": inputs["n"], "sum": fo_left["left"] + fo_right["right"]}


# Output {"n": n, "sum": 2n + 3}; at least 2 s of durable sleep plus two pauses.
failover_mix = Workflow(
    "failover_mix", fo_fetch >> sleep(2, name="fo_nap") >> [fo_left, fo_right] >> fo_join
)


def _hoard(i: int) -> Step:
    async def keep(inputs: dict) -> str:
        return "x" * 200_000  # under the 256 KiB result limit; together over the state limit

    return Step(keep, name=f"hoard{i}")


hoarder = Workflow("hoarder", [_hoard(i) for i in range(12)])


# A relay of short plain steps: while one runs, the next is about to be dispatched to the
# thread pool, so a worker under this load always has a plain step coming up.


@step
def relay_1(inputs: dict) -> dict:
    time.sleep(0.02)
    return {"n": inputs["n"], "hops": 1}


@step
def relay_2(relay_1: dict) -> dict:
    time.sleep(0.02)
    return {**relay_1, "hops": relay_1["hops"] + 1}


@step
def relay_3(relay_2: dict) -> dict:
    time.sleep(0.02)
    return {**relay_2, "hops": relay_2["hops"] + 1}


@step
def relay_4(relay_3: dict) -> dict:
    time.sleep(0.02)
    return {**relay_3, "hops": relay_3["hops"] + 1}


@step
def relay_5(relay_4: dict) -> dict:
    time.sleep(0.02)
    return {**relay_4, "hops": relay_4["hops"] + 1}


@step
def relay_6(relay_5: dict) -> dict:
    time.sleep(0.02)
    return {**relay_5, "hops": relay_5["hops"] + 1}


# Output {"n": n, "hops": 6}.
failover_relay = Workflow(
    "failover_relay", relay_1 >> relay_2 >> relay_3 >> relay_4 >> relay_5 >> relay_6
)


# --- injected engine bugs (tests/unit/test_batch.py, tests/integration/test_integrity.py) -----


class BuggyStep(Step):
    """A step whose definition breaks `decide` once armed: a stand-in for a bug in the state
    machine. `on` names what raises: "dispatch" (its parameters, read to dispatch it) or
    "failure" (its retry policy, read when a run of it failed)."""

    __slots__ = ("on", "armed", "_params", "_retry")

    def __init__(self, fn: object, name: str, on: str) -> None:
        self.on = on
        self.armed = False
        super().__init__(fn, name=name)  # type: ignore[arg-type]

    @property  # type: ignore[override]
    def params(self) -> tuple[str, ...]:
        if self.armed and self.on == "dispatch":
            raise RuntimeError(f"injected bug: dispatching {self.name}")
        return self._params

    @params.setter
    def params(self, value: tuple[str, ...]) -> None:
        self._params = value

    @property  # type: ignore[override]
    def retry(self) -> object:
        if self.armed and self.on == "failure":
            raise RuntimeError(f"injected bug: handling a failure of {self.name}")
        return self._retry

    @retry.setter
    def retry(self, value: object) -> None:
        self._retry = value


def _fails(inputs: dict) -> dict:
    raise ValueError("this step always fails")


def _passes(inputs: dict) -> dict:
    return {"ok": True}


bug_on_start = BuggyStep(_passes, "bug_on_start", on="dispatch")
bug_on_failure = BuggyStep(_fails, "bug_on_failure", on="failure")
bug_at_start = Workflow("bug_at_start", [bug_on_start])
bug_in_outcome = Workflow("bug_in_outcome", [bug_on_failure])
bug_on_start.armed = bug_on_failure.armed = True  # after the definitions were checked


# --- a poison step (tests/fault/test_poison.py): it kills whatever process runs it ---------------


@step
def poison_pill(inputs: dict) -> dict:
    import os

    os._exit(3)  # like a segfault or the OOM killer: no exception, no cleanup, no outcome


poison = Workflow("poison", [poison_pill])


# Child workflows (decisions.md §18): a fan-out of invoices; a parent waiting on a child that
# waits for approval; a parent of children that pause (the kill test), and of a missing one.
@step
async def bill(inputs: dict) -> dict:
    return {"customer": inputs["customer"], "total": inputs["amount"] * 2}


invoice = Workflow("invoice", [bill])


@step
def sum_invoices(invoices: list) -> dict:
    return {"total": sum(i["total"] for i in invoices), "count": len(invoices)}


billing = Workflow(
    "billing",
    children(
        "invoice",
        each=lambda inputs: [{"customer": c, "amount": a} for c, a in inputs["lines"]],
        name="invoices",
    )
    >> sum_invoices,
)


@step
def after_child(flaky_child: dict | None) -> dict:
    return {"child": flaky_child}


guarded = Workflow(
    "guarded", child("approver", lambda inputs: {"amount": inputs["amount"]}, name="approval")
)
parent_of_flaky = Workflow(
    "parent_of_flaky",
    child("retrier", lambda inputs: {"succeed_on": inputs["succeed_on"]}, name="flaky_child")
    >> after_child,
)
parent_of_fans = Workflow(
    "parent_of_fans",
    children(
        "fanout", each=lambda inputs: [{"n": n, "pause": 2.0} for n in inputs["ns"]], name="fans"
    ),  # fmt: skip
)
parent_of_missing = Workflow("parent_of_missing", child("no-such-workflow", {}, name="ghost"))


# Concurrency and rate limits (decisions.md §20): one live execution per customer, whose step
# reports the wall-clock span it ran in (the tests check no two of a customer overlap); a step
# allowed 3 runs per second per API key.
from cerebelum import RateLimit  # noqa: E402


@step
async def hold_slot(inputs: dict) -> dict:
    began = time.time()
    await asyncio.sleep(inputs.get("pause", 0.3))
    return {"n": inputs["n"], "began": began, "ended": time.time()}


one_per_customer = Workflow(
    "one_per_customer", [hold_slot], concurrency_key="customer", concurrency_limit=1
)


@step(rate_limit=RateLimit(3, per_s=1.0, key="api_key"))
async def call_partner(inputs: dict) -> dict:
    return {"n": inputs["n"], "at": time.time()}


rated_call = Workflow("rated_call", [call_partner])
