"""Prometheus metrics of the worker, the mirror and the API: every name in one place.

Each process has its own registry (tests run several mirrors and APIs in one process), served
at /metrics. The hot path stays cheap: the worker counts what a committed transaction recorded
once per transaction, from a tally its batch kept in a plain dict (no lock, no label lookup
per event); counters that processes already keep (the mirror's MirrorStats) and gauges of
their state (owned partitions, lag) are read only when scraped, by `collect()`. Histograms are
observed once per transaction, step run, database batch or request.

The names (deploy/grafana/cerebelum.json charts them):

    worker
    cerebelum_executions_started_total{workflow}        ExecutionStarted events committed
    cerebelum_executions_completed_total{workflow}      ExecutionCompleted
    cerebelum_executions_failed_total{workflow}         ExecutionFailed
    cerebelum_executions_cancelled_total{workflow}      ExecutionCancelled
    cerebelum_executions_blocked_total{workflow}        ExecutionBlocked (no definition of its
                                                        version here: held, decisions.md §6)
    cerebelum_executions_resumed_total{workflow}        ExecutionResumed
    cerebelum_executions_migrated_total{workflow}       ExecutionMigrated
    cerebelum_step_failures_total{workflow,step}        StepFailed
    cerebelum_step_retries_total{workflow,step}         StepRetryScheduled
    cerebelum_step_reschedules_total{workflow,step}     StepRescheduled (re-run after a failover)
    cerebelum_step_duration_seconds{workflow,step}      histogram: one step run, any outcome
    cerebelum_transactions_total                        Kafka transactions committed
    cerebelum_transaction_failures_total                transactions aborted or fenced
    cerebelum_transaction_duration_seconds              histogram: one commit
    cerebelum_batch_inputs                              histogram: inputs per transaction
    cerebelum_rebalances_total{kind}                    assigned | revoked | lost
    cerebelum_owned_partitions                          partitions restored and served
    cerebelum_restore_duration_seconds                  histogram: one take-over's restore
    cerebelum_consumer_lag{partition}                   commands not yet decided, per owned
                                                        partition (cached end offset, <= 5 s old)
    cerebelum_dlq_records_total{reason}                 commands dead-lettered, by kind of reason
    cerebelum_inputs_queued, cerebelum_steps_running    now

    mirror
    cerebelum_mirror_events_total                       valid events fetched
    cerebelum_mirror_events_written_total               of those, new to PostgreSQL
    cerebelum_mirror_batches_total, cerebelum_mirror_malformed_total,
    cerebelum_mirror_rejected_total, cerebelum_mirror_db_retries_total
    cerebelum_mirror_write_duration_seconds             histogram: one batch's transaction
    cerebelum_mirror_lag_events                         events in Kafka not yet in PostgreSQL
    cerebelum_mirror_lag_seconds                        age of the newest mirrored event while
                                                        behind (0 when caught up)

    api
    cerebelum_api_requests_total{method,route,status}
    cerebelum_api_request_duration_seconds{method,route}   histogram

    every process: process_cpu_seconds_total, process_resident_memory_bytes, ... (the
    client library's process collector)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "CONTENT_TYPE_LATEST",
    "ApiMetrics",
    "MirrorMetrics",
    "WorkerMetrics",
    "exposition",
    "new_registry",
]

# Buckets, in seconds unless named otherwise. Steps run from microseconds (a pure function) to
# minutes (a call to a slow service).
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# A transaction costs the broker ~5-8 ms; the fine buckets below 50 ms show the commit interval
# and the broker's load, the coarse ones a broker in trouble.
TRANSACTION_BUCKETS = (0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1, 5)
# Inputs per transaction: 1 under a trickle, up to MAX_BATCH (5,000) in a burst.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000)
# A take-over restores from milliseconds (an empty partition) to seconds (100,000 executions).
RESTORE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# A mirror batch is one PostgreSQL transaction of up to 20,000 events (~0.3 s).
WRITE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# API requests: a query or a produce acknowledged by Kafka.
REQUEST_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# Committed event types the worker counts: (metric name without _total, help, has a step label).
EVENT_COUNTERS: dict[str, tuple[str, str, bool]] = {
    "ExecutionStarted": ("cerebelum_executions_started", "Executions started.", False),
    "ExecutionCompleted": ("cerebelum_executions_completed", "Executions completed.", False),
    "ExecutionFailed": ("cerebelum_executions_failed", "Executions failed.", False),
    "ExecutionCancelled": ("cerebelum_executions_cancelled", "Executions cancelled.", False),
    "ExecutionBlocked": (
        "cerebelum_executions_blocked",
        "Executions held for want of their version's definition.",
        False,
    ),
    "ExecutionResumed": ("cerebelum_executions_resumed", "Blocked executions resumed.", False),
    "ExecutionMigrated": (
        "cerebelum_executions_migrated",
        "Executions moved to another version by a declared mapping.",
        False,
    ),
    "StepFailed": ("cerebelum_step_failures", "Step runs that raised or timed out.", True),
    "StepRetryScheduled": ("cerebelum_step_retries", "Step retries scheduled.", True),
    "StepRescheduled": (
        "cerebelum_step_reschedules",
        "Steps run again because their partition changed owner.",
        True,
    ),
}

# A tally of committed events: (event type, workflow, step or "") -> how many.
Tally = dict[tuple[str, str, str], int]


def new_registry() -> CollectorRegistry:
    """A registry of its own, with the process's CPU, memory and file descriptors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus's text format (CONTENT_TYPE_LATEST)."""
    return generate_latest(registry)


# The counted types, and those of them labelled by step: sets, for the cheapest test per event
# (most events, StepScheduled and StepCompleted, are not counted).
_COUNTED = frozenset(EVENT_COUNTERS)
_BY_STEP = frozenset(kind for kind, (_, _, by_step) in EVENT_COUNTERS.items() if by_step)


def count_events(tally: Tally, events: Iterable[Mapping[str, Any]], workflow: str) -> None:
    """Add the counted types among `events` (one execution's) to `tally`."""
    for event in events:
        kind = event["type"]
        if kind in _COUNTED:
            key = (kind, workflow, event["step"] if kind in _BY_STEP else "")
            tally[key] = tally.get(key, 0) + 1


class WorkerMetrics:
    """The worker's metrics. The worker adds to the plain counters below and observes the
    histograms; gauges come from the callables, read at scrape time on the event loop."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        owned_partitions: Callable[[], int] = lambda: 0,
        consumer_lag: Callable[[], Mapping[int, int]] = dict,
        inputs_queued: Callable[[], int] = lambda: 0,
        steps_running: Callable[[], int] = lambda: 0,
    ) -> None:
        self.registry = registry if registry is not None else new_registry()
        self.events: Tally = {}
        self.transactions = 0
        self.transaction_failures = 0
        self.rebalances: dict[str, int] = {}
        self.dead_letters: dict[str, int] = {}
        self.owned_partitions = owned_partitions
        self.consumer_lag = consumer_lag
        self.inputs_queued = inputs_queued
        self.steps_running = steps_running
        r = self.registry
        self.transaction_seconds = Histogram(
            "cerebelum_transaction_duration_seconds", "Time to commit one Kafka transaction.",
            buckets=TRANSACTION_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_inputs = Histogram(
            "cerebelum_batch_inputs", "Inputs decided in one transaction.",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.restore_seconds = Histogram(
            "cerebelum_restore_duration_seconds",
            "Time to take over partitions: committed offsets, restore, fencing.",
            buckets=RESTORE_BUCKETS, registry=r,
        )  # fmt: skip
        self.step_seconds = Histogram(
            "cerebelum_step_duration_seconds", "Time one step run took, whatever its outcome.",
            ["workflow", "step"], buckets=STEP_BUCKETS, registry=r,
        )  # fmt: skip
        self._steps: dict[tuple[str, str], Any] = {}  # (workflow, step) -> its histogram child
        r.register(self)

    # -- what the worker calls -------------------------------------------------------------

    def committed(self, inputs: int, seconds: float, tally: Tally) -> None:
        """One transaction committed: `inputs` decided in `seconds`, recording `tally`."""
        self.transactions += 1
        self.transaction_seconds.observe(seconds)
        self.batch_inputs.observe(inputs)
        events = self.events
        for key, n in tally.items():
            events[key] = events.get(key, 0) + n

    def dead_lettered(self, kinds: Mapping[str, int]) -> None:
        for kind, n in kinds.items():
            self.dead_letters[kind] = self.dead_letters.get(kind, 0) + n

    def rebalanced(self, kind: str) -> None:
        self.rebalances[kind] = self.rebalances.get(kind, 0) + 1

    def step_ran(self, workflow: str, step: str, seconds: float) -> None:
        child = self._steps.get((workflow, step))
        if child is None:
            child = self._steps[(workflow, step)] = self.step_seconds.labels(workflow, step)
        child.observe(seconds)

    # -- read at scrape time -----------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        families: dict[str, CounterMetricFamily] = {}
        for kind, (name, help_, has_step) in EVENT_COUNTERS.items():
            labels = ["workflow", "step"] if has_step else ["workflow"]
            families[kind] = CounterMetricFamily(name, help_, labels=labels)
        for (kind, workflow, step), n in list(self.events.items()):
            values = [workflow, step] if EVENT_COUNTERS[kind][2] else [workflow]
            families[kind].add_metric(values, n)
        yield from families.values()
        yield CounterMetricFamily(
            "cerebelum_transactions", "Kafka transactions committed.", value=self.transactions
        )
        yield CounterMetricFamily(
            "cerebelum_transaction_failures",
            "Kafka transactions that failed (aborted or fenced); their inputs are decided again.",
            value=self.transaction_failures,
        )
        yield _labelled_counter(
            "cerebelum_rebalances", "Partitions moved by the group: assigned, revoked, lost.",
            "kind", self.rebalances,
        )  # fmt: skip
        yield _labelled_counter(
            "cerebelum_dlq_records", "Commands sent to cerebelum.dlq, by kind of reason.",
            "reason", self.dead_letters,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "cerebelum_owned_partitions", "Partitions this worker has restored and serves.",
            value=self.owned_partitions(),
        )  # fmt: skip
        lag = GaugeMetricFamily(
            "cerebelum_consumer_lag",
            "Commands on the partition not yet decided in a committed transaction.",
            labels=["partition"],
        )
        for partition, behind in sorted(self.consumer_lag().items()):
            lag.add_metric([str(partition)], behind)
        yield lag
        yield GaugeMetricFamily(
            "cerebelum_inputs_queued", "Inputs waiting for a transaction.",
            value=self.inputs_queued(),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "cerebelum_steps_running", "Step runs in progress.", value=self.steps_running()
        )


# The mirror's own counters (MirrorStats fields) as metrics: (name without _total, field, help).
MIRROR_COUNTERS = (
    ("cerebelum_mirror_events", "events_seen", "Valid events fetched from cerebelum.events."),
    ("cerebelum_mirror_events_written", "events_written", "Events new to PostgreSQL."),
    ("cerebelum_mirror_batches", "batches", "Batches written to PostgreSQL."),
    ("cerebelum_mirror_malformed", "malformed", "Records that are not events: skipped."),
    ("cerebelum_mirror_rejected", "rejected", "Events PostgreSQL refused: in mirror_rejects."),
    ("cerebelum_mirror_db_retries", "db_retries", "Batches retried after a database failure."),
)


class MirrorMetrics:
    """The mirror's metrics: its MirrorStats read at scrape time (`stats` returns the current
    object), the lag as last measured, and a histogram of its database transactions."""

    def __init__(self, stats: Callable[[], object], registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else new_registry()
        self.stats = stats
        self.lag_events = 0
        self.lag_seconds = 0.0
        self.write_seconds = Histogram(
            "cerebelum_mirror_write_duration_seconds",
            "Time to write one batch to PostgreSQL (one transaction).",
            buckets=WRITE_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.registry.register(self)

    def collect(self) -> Iterable[Metric]:
        stats = self.stats()
        for name, field, help_ in MIRROR_COUNTERS:
            yield CounterMetricFamily(name, help_, value=getattr(stats, field))
        yield GaugeMetricFamily(
            "cerebelum_mirror_lag_events", "Events in Kafka not yet in PostgreSQL.",
            value=self.lag_events,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "cerebelum_mirror_lag_seconds",
            "While behind: how old the newest event in PostgreSQL is (0 when caught up).",
            value=self.lag_seconds,
        )


class ApiMetrics:
    """Requests by route (its template, e.g. /executions/{execution_id}: bounded labels),
    method and status, and their latency."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        self.requests: dict[tuple[str, str, str], int] = {}
        self.request_seconds = Histogram(
            "cerebelum_api_request_duration_seconds", "Time to answer one request.",
            ["method", "route"], buckets=REQUEST_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.registry.register(self)

    def answered(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        self.request_seconds.labels(method, route).observe(seconds)

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "cerebelum_api_requests", "Requests answered.", labels=["method", "route", "status"]
        )
        for key, n in list(self.requests.items()):
            family.add_metric(list(key), n)
        yield family


def _labelled_counter(name: str, help_: str, label: str, counts: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(name, help_, labels=[label])
    for value, n in sorted(counts.items()):
        family.add_metric([value], n)
    return family
