"""OpenTelemetry spans of the worker: one per step run, one per execution (README, "Tracing").

Off unless configured (Settings.traces_exporter, from the standard OTEL_* variables or
CEREBELUM_TRACING); this module imports OpenTelemetry, so it is imported only then, and a
worker without the `tracing` extra never loads it. The worker and the step runner hold a
`Tracing` or None: off, each step run pays one `is None` test.

An execution outlives any span object: it spans many transactions and possibly several
workers (after a failover). So its trace is derived from its id, not held in memory
(docs/decisions.md §13):

- trace id = the first 16 bytes of SHA-256("cerebelum:" + execution_id), unless the start
  command carried a W3C `traceparent` (recorded on ExecutionStarted, so kept in the state on
  every worker): then the caller's trace id, and the execution span is the caller's span's
  child;
- the execution's span id = the next 8 bytes of the same hash;
- every step run's span is a child of that execution span, on whichever worker it runs;
- the execution span itself is emitted once, by the worker that commits the execution's end
  (ExecutionCompleted, ExecutionFailed, ExecutionCancelled), with the execution's start time
  from its state and that commit's time as its end. Until then a trace viewer shows the step
  spans under a parent yet to come.

Sampling: the decision for a whole execution is the sampler's for its execution span (no
parent, the derived trace id), taken again wherever a step runs; a trace-id-ratio sampler
therefore keeps or drops an execution whole, on every worker.

An exporter that fails (collector away, slow, refusing) never reaches a step or the worker:
spans are exported by the SDK's batch processor on its own thread, which drops what it cannot
send, and every call in here that touches OpenTelemetry is guarded.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace import Span as OtelSpan

from cerebelum.core.state import CANCELLED, COMPLETED, FAILED

if TYPE_CHECKING:
    from cerebelum.core.commands import StepOutcome
    from cerebelum.core.machine import RunStep
    from cerebelum.core.state import Execution

__all__ = ["OTLP", "CONSOLE", "Tracing", "execution_ids", "setup_tracing"]

log = logging.getLogger(__name__)

OTLP = "otlp"
CONSOLE = "console"
EXPORTERS = (OTLP, CONSOLE)

INSTRUMENTATION = "cerebelum"
DEFAULT_SERVICE_NAME = "cerebelum-worker"
# Attribute names (namespaced, as OpenTelemetry asks of non-standard attributes).
ATTR_EXECUTION_ID = "cerebelum.execution_id"
ATTR_WORKFLOW = "cerebelum.workflow"
ATTR_STEP = "cerebelum.step"
ATTR_ATTEMPT = "cerebelum.attempt"
ATTR_PARTITION = "cerebelum.partition"
ATTR_OUTCOME = "cerebelum.outcome"  # a step run: ok | error; an execution: its end status
ATTR_ERROR_TYPE = "error.type"  # OpenTelemetry's own name for it
# How long a stopping worker waits for its last spans to leave: a collector that does not
# answer must not hold up the shutdown (the SDK's own export timeout is 10 s).
SHUTDOWN_TIMEOUT_S = 5.0

_TRACE_NAMESPACE = b"cerebelum:"


def execution_ids(execution_id: str, traceparent: str | None = None) -> tuple[int, int]:
    """(trace id, span id) of an execution: derived from its id (the trace id from the
    caller's `traceparent`, a valid version-00 one, if it gave one), the same on every worker."""
    digest = hashlib.sha256(_TRACE_NAMESPACE + execution_id.encode()).digest()
    # All-zero ids are invalid in W3C trace context; 2^-128 and 2^-64 odds, but never emit one.
    span_id = int.from_bytes(digest[16:24], "big") or 1
    if traceparent is not None:
        return int(traceparent[3:35], 16), span_id
    return int.from_bytes(digest[:16], "big") or 1, span_id


def _caller(traceparent: str | None) -> otel_context.Context:
    """A context whose current span is the caller's (remote) span, or an empty one."""
    if traceparent is None:
        return otel_context.Context()
    flags = trace.TraceFlags(int(traceparent[53:55], 16) & trace.TraceFlags.SAMPLED)
    caller = SpanContext(
        int(traceparent[3:35], 16), int(traceparent[36:52], 16), is_remote=True, trace_flags=flags
    )
    return trace.set_span_in_context(NonRecordingSpan(caller), otel_context.Context())


class _DerivedIds(IdGenerator):
    """Random ids, except while `forced` holds the ids of an execution span being emitted."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()
        self.forced: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
            "cerebelum_forced_ids", default=None
        )

    def generate_span_id(self) -> int:
        forced = self.forced.get()
        return forced[1] if forced is not None else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        forced = self.forced.get()
        return forced[0] if forced is not None else self._random.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        # A hash of the execution id is not the W3C "random" trace id flag's promise.
        return False


class Tracing:
    """The worker's spans. Built by `setup_tracing`, or (tests) around any TracerProvider
    whose id generator is `Tracing.id_generator()`."""

    def __init__(self, provider: TracerProvider, ids: _DerivedIds) -> None:
        self.provider = provider
        self._ids = ids
        self._tracer = provider.get_tracer(INSTRUMENTATION)
        self._sampler = provider.sampler
        self._warned = False

    @staticmethod
    def id_generator() -> _DerivedIds:
        return _DerivedIds()

    # -- step runs ---------------------------------------------------------------------------

    def start_step(self, effect: RunStep, partition: int | None) -> OtelSpan | None:
        """Start the span of one step run, as a child of its execution's span."""
        try:
            attributes: dict[str, Any] = {
                ATTR_EXECUTION_ID: effect.execution_id,
                ATTR_WORKFLOW: effect.workflow,
                ATTR_STEP: effect.step.name,
                ATTR_ATTEMPT: effect.attempt,
            }
            if partition is not None:
                attributes[ATTR_PARTITION] = partition
            parent = trace.set_span_in_context(NonRecordingSpan(self._execution_context(effect)))
            return self._tracer.start_span(
                f"step {effect.workflow}.{effect.step.name}",
                context=parent,
                kind=SpanKind.INTERNAL,
                attributes=attributes,
            )
        except Exception:
            self._failed("starting a step span")
            return None

    @staticmethod
    def activate(span: OtelSpan) -> object:
        """Make `span` the current span of this task (and of the thread a plain step runs
        in), so spans the step's own code makes are its children. Returns a token for
        `deactivate`."""
        return otel_context.attach(trace.set_span_in_context(span))

    @staticmethod
    def deactivate(token: object) -> None:
        otel_context.detach(token)  # type: ignore[arg-type]

    def end_step(self, span: OtelSpan, outcome: StepOutcome) -> None:
        try:
            if outcome.ok:
                span.set_attribute(ATTR_OUTCOME, "ok")
            else:
                error = outcome.error or {}
                kind = str(error.get("type", "Error"))
                message = str(error.get("message", ""))
                span.set_attribute(ATTR_OUTCOME, "error")
                span.set_attribute(ATTR_ERROR_TYPE, kind)
                # What Span.record_exception records, from the outcome: the exception itself
                # may have been raised in a child process (an isolated step).
                exception: dict[str, Any] = {
                    "exception.type": kind,
                    "exception.message": message,
                }
                if outcome.traceback:
                    exception["exception.stacktrace"] = outcome.traceback
                span.add_event("exception", exception)
                span.set_status(Status(StatusCode.ERROR, f"{kind}: {message}"))
            span.end()
        except Exception:
            self._failed("ending a step span")

    def abandon_step(self, span: OtelSpan) -> None:
        """End the span of a run cancelled by a stopping worker (its outcome is unrecorded)."""
        try:
            span.set_attribute(ATTR_OUTCOME, "cancelled")
            span.end()
        except Exception:
            self._failed("ending a step span")

    # -- executions --------------------------------------------------------------------------

    def execution_ended(self, state: Execution, partition: int) -> None:
        """Emit the span of an execution whose end was just committed."""
        try:
            ids = execution_ids(state.id, state.traceparent)
            attributes: dict[str, Any] = {
                ATTR_EXECUTION_ID: state.id,
                ATTR_WORKFLOW: state.workflow,
                ATTR_PARTITION: partition,
                ATTR_OUTCOME: state.status,
            }
            token = self._ids.forced.set(ids)
            try:
                span = self._tracer.start_span(
                    f"execution {state.workflow}",
                    context=_caller(state.traceparent),  # not this task's current span
                    kind=SpanKind.INTERNAL,
                    attributes=attributes,
                    start_time=state.started_at * 1_000_000,
                )
            finally:
                self._ids.forced.reset(token)
            if state.status == FAILED:
                error = state.error or {}
                kind = str(error.get("type", "Error"))
                span.set_attribute(ATTR_ERROR_TYPE, kind)
                span.set_status(Status(StatusCode.ERROR, f"{kind}: {error.get('message', '')}"))
            elif state.status == COMPLETED:
                span.set_status(Status(StatusCode.OK))
            elif state.status == CANCELLED and state.error:
                span.set_attribute("cerebelum.cancel_reason", str(state.error.get("message", "")))
            # Now, just after the commit that recorded its end: the end is durable from here,
            # and state.updated_at (the decision's clock, in ms) may fall before the end of
            # the last step span (in ns).
            span.end(end_time=time.time_ns())
        except Exception:
            self._failed("emitting an execution span")

    def _execution_context(self, effect: RunStep) -> SpanContext:
        trace_id, span_id = execution_ids(effect.execution_id, effect.traceparent)
        decision = self._sampler.should_sample(
            _caller(effect.traceparent), trace_id, f"execution {effect.workflow}"
        )
        sampled = decision.decision is Decision.RECORD_AND_SAMPLE
        flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled else 0)
        return SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)

    # -- the rest ----------------------------------------------------------------------------

    def _failed(self, what: str) -> None:
        # Tracing is an aid: a failure costs spans, never a step. Said once, with its cause.
        if not self._warned:
            self._warned = True
            log.warning("tracing: %s failed; spans may be missing", what, exc_info=True)

    def shutdown(self) -> None:
        """Send the spans still queued, waiting SHUTDOWN_TIMEOUT_S at most."""
        done = threading.Thread(target=self._shutdown, name="cerebelum-tracing-stop", daemon=True)
        done.start()
        done.join(SHUTDOWN_TIMEOUT_S)
        if done.is_alive():
            log.warning("tracing: the last spans were not sent within %.0f s", SHUTDOWN_TIMEOUT_S)

    def _shutdown(self) -> None:
        try:
            self.provider.shutdown()
        except Exception:
            log.warning("tracing: shutting down the exporter failed", exc_info=True)


def setup_tracing(
    exporter: str, instance_id: str, processor: SpanProcessor | None = None
) -> Tracing:
    """The worker's Tracing, exporting through `exporter` ("otlp": OTLP over HTTP/protobuf,
    configured by the standard OTEL_EXPORTER_OTLP_* variables; "console": stdout). The SDK
    reads the standard variables here, at the edge: OTEL_SERVICE_NAME and
    OTEL_RESOURCE_ATTRIBUTES (service.name defaults to cerebelum-worker), OTEL_TRACES_SAMPLER,
    OTEL_BSP_* (the batch processor's queue and delays)."""
    resource = Resource.create({"service.instance.id": instance_id})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    ids = Tracing.id_generator()
    provider = TracerProvider(resource=resource, id_generator=ids)
    if processor is None:
        processor = BatchSpanProcessor(_exporter(exporter))
    provider.add_span_processor(processor)
    return Tracing(provider, ids)


def _exporter(name: str) -> SpanExporter:
    if name == OTLP:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if name == CONSOLE:
        return ConsoleSpanExporter()
    raise ValueError(f"traces exporter must be one of {', '.join(EXPORTERS)}, not {name!r}")
