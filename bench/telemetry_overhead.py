"""What the worker's telemetry costs on its hot path: a microbenchmark, no Kafka.

    python -m bench.telemetry_overhead [--inputs 5000] [--repeat 7]

Prints, per input or per call (the best of --repeat runs, so other load on the box counts
least):
    1. decide_batch over a batch of W3 inputs (starts, then each step's outcome), with the
       batch's event tally (telemetry.metrics.count_events) and with it replaced by a no-op,
       interleaved (the difference is within the noise of a shared box), and the tally alone;
    2. WorkerMetrics.committed (once per transaction) and step_ran (once per step run);
    3. what a step run adds in the runner: its log context, two clock reads, and for a plain
       step a copy of the context for its thread.
"""

from __future__ import annotations

import argparse
import contextvars
import gc
import time
from collections.abc import Callable
from typing import Any

from cerebelum.constants import PARTITIONS
from cerebelum.core.commands import StepOutcome, start_command
from cerebelum.core.ids import home_partition
from cerebelum.core.machine import RunStep
from cerebelum.core.workflow import Registry, Workflow, step
from cerebelum.telemetry.logs import set_log_context
from cerebelum.telemetry.metrics import WorkerMetrics
from cerebelum.worker import batch as batch_module
from cerebelum.worker.batch import CommandRecord, decide_batch
from cerebelum.worker.partition import PartitionState
from cerebelum.worker.restore import RestoredPartition


@step
async def step1(inputs: dict[str, int]) -> dict[str, int]:
    return {"n": inputs["n"] + 1}


@step
async def step2(step1: dict[str, int]) -> dict[str, int]:
    return {"n": step1["n"] * 2}


@step
async def step3(step2: dict[str, int]) -> dict[str, int]:
    return step2


REGISTRY = Registry([Workflow("w3", step1 >> step2 >> step3)])
WRITER = b"cerebelum-worker-bench"


def w3_batches(n: int) -> list[list[tuple[PartitionState, Any]]]:
    """Four batches of n inputs each, as a worker decides them: the starts, then each step's
    outcome. Decided once here to learn each step's token; timed again by the caller."""
    parts = {p: PartitionState(p, RestoredPartition(), 0) for p in range(PARTITIONS)}
    ids = [f"bench-{i}" for i in range(n)]
    starts = []
    for i, eid in enumerate(ids):
        ps = parts[home_partition(eid, PARTITIONS)]
        value = start_command(eid, "w3", {"n": i})
        starts.append((ps, CommandRecord(ps.partition, i, eid.encode(), value)))
    batches: list[list[tuple[PartitionState, Any]]] = [starts]
    inputs: list[tuple[PartitionState, Any]] = starts
    for _ in range(3):
        decided = decide_batch(inputs, REGISTRY, 0, PARTITIONS, WRITER)
        for ps, execution_id, state in decided.installs:
            ps.executions[execution_id] = state
        inputs = []
        for ps, effect in decided.effects:
            assert isinstance(effect, RunStep)
            outcome = StepOutcome(effect.execution_id, effect.step.name, effect.token, True, {})
            inputs.append((ps, outcome))
        batches.append(inputs)
    return batches[:4]


def best(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    n, repeat = args.inputs, args.repeat
    batches = w3_batches(n)
    total = sum(len(b) for b in batches)

    def decide_all() -> None:
        for inputs in batches:
            decide_batch(inputs, REGISTRY, 0, PARTITIONS, WRITER)

    names = vars(batch_module)  # the module's globals: decide_batch looks count_events up there
    counting = names["count_events"]

    def no_tally(tally: object, events: object, workflow: object) -> None:
        return None

    # Interleaved, after a full collection each: the box's other load and the GC hit both.
    with_tally, without = float("inf"), float("inf")
    for _ in range(repeat):
        gc.collect()
        with_tally = min(with_tally, best(1, decide_all))
        names["count_events"] = no_tally
        try:
            gc.collect()
            without = min(without, best(1, decide_all))
        finally:
            names["count_events"] = counting
    per_with, per_without = with_tally / total * 1e9, without / total * 1e9
    print(f"decide_batch, {total} W3 inputs in {len(batches)} batches:")
    print(f"  with the tally    {per_with:8.0f} ns/input")
    print(f"  without           {per_without:8.0f} ns/input")
    print(f"  tally costs       {per_with - per_without:8.0f} ns/input "
          f"({(per_with - per_without) / per_without:+.1%})")  # fmt: skip

    # The tally alone, on the events a W3 input records (decide_batch above is too noisy to
    # resolve a difference this small): a start, two step outcomes, the last outcome.
    per_input = [
        [{"type": "ExecutionStarted"}, {"type": "StepScheduled", "step": "step1"}],
        [{"type": "StepCompleted", "step": "step1"}, {"type": "StepScheduled", "step": "step2"}],
        [{"type": "StepCompleted", "step": "step2"}, {"type": "StepScheduled", "step": "step3"}],
        [{"type": "StepCompleted", "step": "step3"}, {"type": "ExecutionCompleted"}],
    ] * 25_000
    tally_only: dict[tuple[str, str, str], int] = {}

    def tally_all() -> None:
        for events in per_input:
            counting(tally_only, events, "w3")

    alone = best(repeat, tally_all)
    print(f"  count_events alone {alone / len(per_input) * 1e9:7.0f} ns/input")

    metrics = WorkerMetrics()
    tally = {("ExecutionStarted", "w3", ""): 100, ("ExecutionCompleted", "w3", ""): 100}
    calls = 100_000

    def commit_many() -> None:
        for _ in range(calls):
            metrics.committed(200, 0.008, tally)

    def run_many() -> None:
        for _ in range(calls):
            metrics.step_ran("w3", "step1", 0.001)

    committed, stepped = best(repeat, commit_many), best(repeat, run_many)
    print(f"WorkerMetrics.committed (per transaction) {committed / calls * 1e9:6.0f} ns")
    print(f"WorkerMetrics.step_ran (per step run)     {stepped / calls * 1e9:6.0f} ns")

    def runner_additions() -> None:
        for _ in range(calls):
            context = contextvars.copy_context()
            context.run(set_log_context, execution_id="e", workflow="w3", step="step1")
            started = time.perf_counter()
            metrics.step_ran("w3", "step1", time.perf_counter() - started)
            contextvars.copy_context()  # a plain step's thread context

    added = best(repeat, runner_additions)
    print(f"runner additions per step run (context, clocks, observe) {added / calls * 1e9:6.0f} ns")


if __name__ == "__main__":
    main()
