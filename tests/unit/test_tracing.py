"""OpenTelemetry spans (cerebelum.telemetry.tracing) with the real SDK and its in-memory
exporter: the shape of step and execution spans, one trace per execution, sampling kept whole,
failures that never reach a step, and the switch (config.traces_exporter_from_env)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import StatusCode

from cerebelum.config import traces_exporter_from_env
from cerebelum.constants import PARTITIONS
from cerebelum.core.commands import StepOutcome, start_command
from cerebelum.core.ids import home_partition
from cerebelum.core.machine import RunStep
from cerebelum.core.workflow import Registry, step
from cerebelum.errors import ConfigurationError
from cerebelum.telemetry.tracing import Tracing, execution_ids
from cerebelum.worker.batch import CommandRecord, decide_batch
from cerebelum.worker.partition import PartitionState
from cerebelum.worker.restore import RestoredPartition
from cerebelum.worker.runner import StepRunner, run_step
from tests import apps

REGISTRY = Registry.from_namespace(vars(apps))
POOL = ThreadPoolExecutor(1)
# Where the user's own code inside a step gets its tracer from (set by the test that needs it).
user_provider: list[TracerProvider] = []


def make_tracing(
    exporter: SpanExporter | None = None, sampler: Any = None
) -> tuple[Tracing, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    ids = Tracing.id_generator()
    kwargs: dict[str, Any] = {"id_generator": ids}
    if sampler is not None:
        kwargs["sampler"] = sampler
    provider = TracerProvider(**kwargs)
    provider.add_span_processor(SimpleSpanProcessor(exporter or memory))
    return Tracing(provider, ids), memory


@pytest.fixture
def tracing() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    made = make_tracing()
    yield made
    made[0].provider.shutdown()


@step
def plain_ok(inputs: dict) -> dict:
    # The user's own span: a child of the step run's span, in the step's thread.
    if not user_provider:
        return {"n": inputs["n"] + 1}
    with user_provider[0].get_tracer("tests.user_code").start_as_current_span("user work"):
        return {"n": inputs["n"] + 1}


@step
async def async_fails(inputs: dict) -> dict:
    raise LookupError(f"no {inputs['what']}")


async def run(runner: StepRunner, effect: RunStep) -> StepOutcome:
    done: asyncio.Future[StepOutcome] = asyncio.get_running_loop().create_future()
    runner.submit(effect, done.set_result, partition=5)
    return await asyncio.wait_for(done, 10)


def by_name(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


async def test_a_step_run_is_a_span_under_its_execution_with_the_users_spans_under_it(
    tracing: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracer, memory = tracing
    effect = RunStep("e-1", plain_ok, 2, 7, {"inputs": {"n": 1}}, workflow="shop")
    runner = StepRunner(4, threads=1, tracing=tracer)
    user_provider.append(tracer.provider)
    try:
        outcome = await run(runner, effect)
    finally:
        user_provider.clear()
        runner.close()
    assert outcome.ok and outcome.value == {"n": 2}
    spans = by_name(memory.get_finished_spans())
    run_span, user_span = spans["step shop.plain_ok"], spans["user work"]
    trace_id, execution_span_id = execution_ids("e-1")
    assert run_span.context is not None and user_span.context is not None
    assert run_span.context.trace_id == trace_id
    assert run_span.parent is not None and run_span.parent.span_id == execution_span_id
    assert user_span.context.trace_id == trace_id
    assert user_span.parent is not None and user_span.parent.span_id == run_span.context.span_id
    assert dict(run_span.attributes or {}) == {
        "cerebelum.execution_id": "e-1",
        "cerebelum.workflow": "shop",
        "cerebelum.step": "plain_ok",
        "cerebelum.attempt": 2,
        "cerebelum.partition": 5,
        "cerebelum.outcome": "ok",
    }
    assert run_span.status.status_code is StatusCode.UNSET


async def test_a_failed_step_run_records_its_exception_and_an_error_status(
    tracing: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracer, memory = tracing
    effect = RunStep("e-2", async_fails, 1, 3, {"inputs": {"what": "tea"}}, workflow="shop")
    runner = StepRunner(4, threads=1, tracing=tracer)
    try:
        outcome = await run(runner, effect)
    finally:
        runner.close()
    assert not outcome.ok
    (span,) = memory.get_finished_spans()
    assert span.name == "step shop.async_fails"
    assert span.attributes is not None
    assert span.attributes["cerebelum.outcome"] == "error"
    assert span.attributes["error.type"] == "LookupError"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "LookupError: no tea"
    (event,) = span.events
    assert event.name == "exception" and event.attributes is not None
    assert event.attributes["exception.type"] == "LookupError"
    assert event.attributes["exception.message"] == "no tea"
    assert "in async_fails" in str(event.attributes["exception.stacktrace"])


def run_to_the_end(
    execution_id: str,
    workflow: str,
    tracer: Tracing,
    inputs: Any = None,
    traceparent: str | None = None,
) -> list[str]:
    """Drive an execution through decide_batch as the worker does (decide, commit, install,
    run its steps inline in their spans, emit the spans of the executions a batch ends); the
    ends seen."""
    ps = PartitionState(home_partition(execution_id, PARTITIONS), RestoredPartition(), 0)
    value = start_command(execution_id, workflow, inputs or {"n": 1}, traceparent)
    queue: list[Any] = [(ps, CommandRecord(ps.partition, 0, execution_id.encode(), value))]
    now, ended = 1_000, []
    while queue:
        batch = decide_batch(queue, REGISTRY, now, PARTITIONS, b"w")
        for ps_, eid, state in batch.installs:
            if not isinstance(state, bytes):
                ps_.executions[eid] = state
        for p, state in batch.ended:
            tracer.execution_ended(state, p)
            ended.append(state.status)
        queue = []
        for _, effect in batch.effects:
            assert isinstance(effect, RunStep)
            span = tracer.start_step(effect, ps.partition)
            assert span is not None
            outcome = asyncio.run(run_step(effect, POOL))
            tracer.end_step(span, outcome)
            queue.append((ps, outcome))
        now += 250
    return ended


def test_an_execution_is_one_trace_whose_root_span_is_emitted_once_at_its_end(
    tracing: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracer, memory = tracing
    before = time.time_ns()
    assert run_to_the_end("order-7", "w3", tracer) == ["completed"]
    *steps, root = memory.get_finished_spans()
    assert [s.name for s in steps] == ["step w3.step1", "step w3.step2", "step w3.step3"]
    trace_id, span_id = execution_ids("order-7")
    assert root.name == "execution w3"
    assert root.context is not None and root.parent is None
    assert (root.context.trace_id, root.context.span_id) == (trace_id, span_id)
    # From the state's start (1,000 ms: the clock decide was given) to the commit of its end.
    assert root.start_time == 1_000_000_000
    assert root.end_time is not None and before <= root.end_time <= time.time_ns()
    assert root.status.status_code is StatusCode.OK
    assert dict(root.attributes or {}) == {
        "cerebelum.execution_id": "order-7",
        "cerebelum.workflow": "w3",
        "cerebelum.partition": home_partition("order-7", PARTITIONS),
        "cerebelum.outcome": "completed",
    }


def test_a_failed_execution_span_has_an_error_status(
    tracing: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracer, memory = tracing
    assert run_to_the_end("big-1", "big", tracer, {"size": 300_000}) == ["failed"]
    root = memory.get_finished_spans()[-1]
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes is not None and root.attributes["cerebelum.outcome"] == "failed"
    assert root.attributes["error.type"] == "LimitExceeded"


CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def test_an_execution_started_with_a_traceparent_joins_the_callers_trace(
    tracing: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracer, memory = tracing
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    assert run_to_the_end("order-8", "w3", tracer, traceparent=traceparent) == ["completed"]
    *steps, root = memory.get_finished_spans()
    assert len(steps) == 3
    assert {s.context.trace_id for s in memory.get_finished_spans()} == {int(CALLER_TRACE, 16)}  # type: ignore[union-attr]
    assert root.context is not None and root.parent is not None
    assert root.parent.span_id == int(CALLER_SPAN, 16) and root.parent.is_remote
    assert root.context.span_id == execution_ids("order-8")[1]
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in steps)


def test_a_caller_that_did_not_sample_its_trace_gets_no_spans_of_the_execution(
    tracing: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracer, memory = tracing  # the default sampler follows the parent's decision
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"
    assert run_to_the_end("order-9", "w3", tracer, traceparent=traceparent) == ["completed"]
    assert memory.get_finished_spans() == ()


def test_the_derived_ids_are_stable_and_differ_by_execution() -> None:
    assert execution_ids("a") == execution_ids("a")
    assert execution_ids("a")[0] != execution_ids("b")[0]
    assert all(0 < i for i in execution_ids("a"))


async def test_a_ratio_sampler_keeps_or_drops_an_execution_whole() -> None:
    tracer, memory = make_tracing(sampler=TraceIdRatioBased(0.5))
    runner = StepRunner(4, threads=1, tracing=tracer)
    try:
        for i in range(40):
            effect = RunStep(f"s-{i}", plain_ok, 1, 1, {"inputs": {"n": i}}, workflow="shop")
            await run(runner, effect)
    finally:
        runner.close()
    for i in range(40):
        tracer.execution_ended(_ended(f"s-{i}"), 0)
    spans = memory.get_finished_spans()
    steps = {s.attributes["cerebelum.execution_id"] for s in spans if s.name.startswith("step")}  # type: ignore[index]
    roots = {s.attributes["cerebelum.execution_id"] for s in spans if s.name.startswith("exec")}  # type: ignore[index]
    assert steps == roots and 0 < len(roots) < 40
    tracer.provider.shutdown()


def _ended(execution_id: str) -> Any:
    from cerebelum.core.state import COMPLETED, Execution

    state = Execution(execution_id)
    state.workflow, state.status, state.started_at, state.updated_at = "shop", COMPLETED, 1, 2
    return state


class Broken(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("collector away")

    def shutdown(self) -> None:
        pass


async def test_an_exporter_that_fails_never_reaches_the_step() -> None:
    tracer, _ = make_tracing(exporter=Broken())
    runner = StepRunner(4, threads=1, tracing=tracer)
    try:
        outcome = await run(runner, RunStep("e-3", plain_ok, 1, 1, {"inputs": {"n": 1}}))
    finally:
        runner.close()
    assert outcome.ok and outcome.value == {"n": 2}
    tracer.execution_ended(_ended("e-3"), 0)  # does not raise either
    tracer.shutdown()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"CEREBELUM_TRACING": "on"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "CEREBELUM_TRACING": "off"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, None),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, None),  # a protocol alone turns nothing on
    ],
)
def test_tracing_is_off_unless_configured(env: dict[str, str], expected: str | None) -> None:
    assert traces_exporter_from_env(env) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CEREBELUM_TRACING": "yes"}, "CEREBELUM_TRACING must be 'on' or 'off'"),
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER must be one of"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "over OTLP http/protobuf only",
        ),
    ],
)
def test_a_tracing_setting_cerebelum_cannot_honour_is_refused(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        traces_exporter_from_env(env)


def test_a_worker_without_tracing_never_imports_opentelemetry() -> None:
    code = (
        "import sys\n"
        "from cerebelum.config import Settings\n"
        "from cerebelum.core.workflow import Registry\n"
        "from cerebelum.cli.worker import _setup_tracing\n"
        "from cerebelum.worker.app import Worker\n"
        "s = Settings.from_env({})\n"
        "assert _setup_tracing(s) is None\n"
        "Worker(s, Registry())\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_tracing_configured_without_opentelemetry_installed_runs_untraced_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from cerebelum.cli.worker import _setup_tracing
    from cerebelum.config import Settings

    monkeypatch.setitem(sys.modules, "cerebelum.telemetry.tracing", None)  # import fails
    settings = Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert settings.traces_exporter == "otlp"
    with caplog.at_level("WARNING"):
        assert _setup_tracing(settings) is None
    assert "pip install 'cerebelum[tracing]'" in caplog.text


def test_the_cli_refuses_a_tracing_setting_it_cannot_honour(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cerebelum.cli.main import main

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    assert main(["worker", "--app", "tests.apps"]) == 2
    assert "OTEL_TRACES_EXPORTER must be one of otlp, console or none" in capsys.readouterr().err


def test_an_sdk_setting_it_cannot_read_leaves_the_worker_untraced_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from cerebelum.cli.worker import _setup_tracing
    from cerebelum.config import Settings

    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "-1")  # the SDK raises ValueError on it
    settings = Settings.from_env({"OTEL_TRACES_EXPORTER": "console"})
    with caplog.at_level("WARNING"):
        assert _setup_tracing(settings) is None
    assert "max_queue_size must be a positive integer" in caplog.text
