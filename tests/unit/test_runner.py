"""The step runner (cerebelum.worker.runner), without Kafka: a failed step's traceback, its log
line and its context, and the durations it reports."""

from __future__ import annotations

import asyncio
import logging

import pytest

from cerebelum.core.commands import StepOutcome
from cerebelum.core.machine import RunStep
from cerebelum.core.workflow import Step, step
from cerebelum.telemetry.logs import JsonFormatter
from cerebelum.worker.runner import StepRunner

log = logging.getLogger("tests.user_step")


@step
def plain_fails(inputs: dict) -> dict:
    log.info("about to fail")  # the user's own line: carries the run's context
    raise LookupError(f"no {inputs['what']}")


@step
async def async_fails(inputs: dict) -> dict:
    raise LookupError(f"no {inputs['what']}")


async def run(effect: RunStep) -> tuple[StepOutcome, list[tuple[str, str, float]]]:
    observed: list[tuple[str, str, float]] = []
    runner = StepRunner(4, threads=1, observe=lambda w, s, t: observed.append((w, s, t)))
    done: asyncio.Future[StepOutcome] = asyncio.get_running_loop().create_future()
    runner.submit(effect, done.set_result, partition=3)
    try:
        return await asyncio.wait_for(done, 10), observed
    finally:
        runner.close()


class Lines(logging.Handler):
    """Formats each record as JSON when it is emitted (in the context it was logged in)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.mark.parametrize("failing", [plain_fails, async_fails])
async def test_a_failed_step_reports_its_traceback_and_logs_it_in_context(
    failing: Step,
) -> None:
    effect = RunStep("e-1", failing, 2, 7, {"inputs": {"what": "tea"}}, workflow="shop")
    handler, root = Lines(), logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        outcome, observed = await run(effect)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert not outcome.ok and outcome.error is not None
    assert outcome.error["type"] == "LookupError" and outcome.error["message"] == "no tea"
    assert outcome.traceback is not None
    assert outcome.traceback.startswith("Traceback (most recent call last):")
    assert "raise LookupError(f\"no {inputs['what']}\")" in outcome.traceback
    assert outcome.traceback.rstrip().endswith("LookupError: no tea")
    # It starts at the step: the runner's, asyncio's and the thread pool's frames are left out.
    frames = [line for line in outcome.traceback.splitlines() if line.startswith("  File ")]
    assert frames and __file__ in frames[0] and f"in {failing.name}" in frames[0], frames
    assert [(w, s) for w, s, _ in observed] == [("shop", failing.name)]

    lines = handler.lines
    failure = next(line for line in lines if "failed: LookupError" in line)
    expected = ['"execution_id":"e-1"', '"workflow":"shop"', '"partition":3', '"exception":"Tra']
    for field in [*expected, f'"step":"{failing.name}"']:
        assert field in failure
    if failing is plain_fails:  # a plain step's thread inherits the context
        own = next(line for line in lines if "about to fail" in line)
        assert '"execution_id":"e-1"' in own and '"step":"plain_fails"' in own
