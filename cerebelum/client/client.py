"""The Python client: start executions by producing start-commands, and wait for their results.

    async with Client(Settings.from_env()) as client:
        execution_id = await client.start("order", {"order_id": 7})
        result = await client.wait(execution_id, timeout=30)

`start` produces straight to cerebelum.commands (key = execution id), exactly what any Kafka
producer in any language may do (docs/start-command.md). Ids and names are checked against the
id alphabet before anything is produced (InvalidId). Reaching Kafka and every acknowledgement
are bounded by the client's `timeout` (KafkaUnavailable past it), so no call hangs on a broker
that is away or cannot allocate a producer id.

`wait` follows cerebelum.events, where the execution's terminal event appears the moment its
transaction commits, and cerebelum.dlq beside it: a start that a worker dead-lettered (unknown
workflow, wrong partition, bad input) fails the wait at once with CommandRejected instead of
letting it run into its timeout.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from confluent_kafka import KafkaException

from cerebelum._aiokafka import start_or_stop
from cerebelum.client.listener import DeadLetter, Listener
from cerebelum.config import Settings
from cerebelum.constants import (
    CMD_CANCEL,
    CMD_CHILD_ENDED,
    CMD_COMPLETE,
    CMD_PERMIT,
    CMD_SIGNAL,
    HEADER_DLQ_EXECUTION_ID,
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE_OFFSET,
    HEADER_DLQ_SOURCE_PARTITION,
    PARTITIONS,
)
from cerebelum.core.commands import (
    cancel_command,
    complete_command,
    parse_completion_token,
    parse_traceparent,
    signal_command,
    start_command,
)
from cerebelum.core.events import (
    EXECUTION_CANCELLED,
    EXECUTION_COMPLETED,
    TERMINAL_EVENTS,
    cancelled_error,
)
from cerebelum.core.ids import home_partition, id_problem, reserved_id_problem
from cerebelum.errors import CommandRejected, InvalidId, KafkaRefused, KafkaUnavailable
from cerebelum.security.kafka import aiokafka_kwargs
from cerebelum.security.probe import refusal

# How long connecting and each acknowledgement may take before the call fails: a healthy broker
# acknowledges in milliseconds and a restarting one is back within seconds, while a person at a
# terminal or an HTTP caller should hear within a quarter of a minute that Kafka is not there.
DEFAULT_TIMEOUT_S = 15.0
# Results (and refusals) that arrive before anyone waits for them are kept, up to this many; so
# are the positions of the starts this client produced while listening.
MAX_KEPT = 100_000


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    execution_id: str
    status: str  # "completed", "failed" or "cancelled"
    output: Any = None
    # {"type", "message", ...}; a cancelled execution's is {"type": "Cancelled", "message": reason}
    error: dict[str, Any] | None = None
    version: int = 0


class Client:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        namespace: str | None = None,
    ) -> None:
        """`namespace`: the namespace to start and follow executions in; by default the
        settings' (CEREBELUM_NAMESPACE, else the default namespace)."""
        settings = settings or Settings.from_env()
        if namespace is not None:
            settings = replace(settings, namespace=namespace)
        self.settings = settings
        self.names = settings.names
        self.timeout = timeout
        self._producer: AIOKafkaProducer | None = None
        self._listener: Listener | None = None
        self._waiting: dict[str, asyncio.Future[ExecutionResult]] = {}
        self._finished: dict[str, ExecutionResult | CommandRejected] = {}
        # execution id -> (partition, offset) of the start this client produced while listening:
        # only the dead-lettering of *that* record fails its wait, not someone else's bad copy.
        self._sent_starts: dict[str, tuple[int, int]] = {}

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """True once `connect()` succeeded: commands can be produced."""
        return self._producer is not None

    async def connect(self) -> None:
        """Open the producer; KafkaUnavailable if Kafka does not take it within the timeout."""
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            **aiokafka_kwargs(self.settings),
            acks="all",
            enable_idempotence=True,
            # A few ms of linger batches bursts of starts into few requests.
            linger_ms=2,
            # Unsent records expire after this long, so even a start_nowait future and close()
            # end within the client's bound when the broker goes away.
            request_timeout_ms=int(self.timeout * 1000),
        )
        try:
            # Bootstrap, then (idempotence) a producer id: aiokafka retries the latter forever.
            async with asyncio.timeout(self.timeout):
                await start_or_stop(producer)
        except (KafkaError, OSError, TimeoutError) as exc:
            # Bootstrapped (it knows brokers) but no producer id: say so, it is another fault.
            bootstrapped = bool(producer.client.cluster.brokers())
            doing = "allocate a producer id" if bootstrapped else "answer"
            if not bootstrapped and (reason := await refusal(self.settings, self.timeout)):
                raise KafkaRefused(
                    self.settings.kafka_bootstrap, self.timeout, doing, reason
                ) from None
            raise self._unavailable(doing, exc) from None
        self._producer = producer

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await asyncio.to_thread(listener.close)
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    # -- commands --------------------------------------------------------------------------

    async def start(
        self,
        workflow: str,
        inputs: Any = None,
        execution_id: str | None = None,
        traceparent: str | None = None,
    ) -> str:
        """Start an execution (idempotent by id: a second start with the same id starts nothing).
        `traceparent`: a W3C trace context the execution's spans join (README, "Tracing")."""
        execution_id = uuid.uuid4().hex if execution_id is None else execution_id
        value = self._start_value(workflow, inputs, execution_id, traceparent)
        record = await self._produce(execution_id, value, "start")
        if self._listener is not None:
            self._finished.pop(execution_id, None)  # a refusal of an earlier start is stale
            _keep(self._sent_starts, execution_id, (record.partition, record.offset))
        return execution_id

    async def start_nowait(
        self, workflow: str, inputs: Any, execution_id: str
    ) -> asyncio.Future[Any]:
        """Queue a start-command; the returned future resolves once Kafka acknowledges it (or
        fails once the client's timeout passes without an acknowledgement)."""
        value = self._start_value(workflow, inputs, execution_id)
        fut: asyncio.Future[Any] = await self._require_producer().send(
            self.names.commands, value, execution_id.encode()
        )
        return fut

    async def ping(self) -> bool:
        """True if a broker answers a metadata request (the API's health check)."""
        if self._producer is None:
            return False
        metadata = await self._producer.client.fetch_all_metadata()
        return bool(metadata.brokers())

    async def signal(self, execution_id: str, signal: str, payload: Any = None) -> None:
        """Send a signal (an approval, any external event). One that arrives before the
        execution waits for it is kept until it does."""
        _check_id(execution_id, "execution_id")
        _check_id(signal, "signal")
        value = signal_command(execution_id, signal, payload, self.names.namespace)
        await self._produce(execution_id, value, "signal")

    async def cancel(self, execution_id: str, reason: str = "cancelled") -> None:
        """Cancel an execution: it records why, runs no further step, drops its timers."""
        _check_id(execution_id, "execution_id")
        await self._produce(
            execution_id, cancel_command(execution_id, reason, self.names.namespace), "cancel"
        )

    async def complete(
        self, token: str, result: Any = None, *, error: dict[str, str] | None = None
    ) -> str:
        """Complete a step that returned ctx.pending(), by the token it handed out: with its
        result, or with `error` ({"type": ..., "message": ...}), which fails the step (its
        retry policy and diverge rules apply). Recorded once: a second completion, or one for
        an earlier run, is refused (dead-lettered). Returns the execution id."""
        try:
            execution_id, step, number = parse_completion_token(token)
        except ValueError as exc:
            raise InvalidId("completion token", token, str(exc)) from None
        if error is not None and not (isinstance(error, dict) and error.get("type")):
            raise ValueError('error must be {"type": "...", "message": "..."}')
        command = complete_command(execution_id, step, number, result, error, self.names.namespace)
        await self._produce(execution_id, command, "completion")
        return execution_id

    async def send_command(self, execution_id: str, value: bytes) -> None:
        """Produce a command as it is (a dead letter being replayed), keyed by `execution_id`,
        so it lands on that execution's home partition."""
        _check_id(execution_id, "execution_id")
        await self._produce(execution_id, value, "command")

    async def run(
        self,
        workflow: str,
        inputs: Any = None,
        execution_id: str | None = None,
        timeout: float = 60,
        traceparent: str | None = None,
    ) -> ExecutionResult:
        """Start an execution and wait for its end (CommandRejected if a worker refuses it)."""
        execution_id = uuid.uuid4().hex if execution_id is None else execution_id
        _check_id(execution_id, "execution_id")
        _check_id(workflow, "workflow")
        await self.listen()
        await self.start(workflow, inputs, execution_id, traceparent)
        return await self.wait(execution_id, timeout)

    def _start_value(
        self, workflow: str, inputs: Any, execution_id: str, traceparent: str | None = None
    ) -> bytes:
        _check_id(execution_id, "execution_id")
        _check_id(workflow, "workflow")
        if (reserved := reserved_id_problem(execution_id, workflow)) is not None:
            raise InvalidId("execution_id", execution_id, reserved)
        if traceparent is not None:
            parsed = parse_traceparent(traceparent)
            if parsed is None:  # a caller's bug, told at once (a worker would drop it)
                raise ValueError(f"traceparent is not a W3C trace context: {traceparent[:100]!r}")
            traceparent = parsed
        inputs = {} if inputs is None else inputs
        return start_command(
            execution_id, workflow, inputs, traceparent, namespace=self.names.namespace
        )

    def _require_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("call connect() or use `async with Client()` first")
        return self._producer

    async def _produce(self, execution_id: str, value: bytes, what: str) -> Any:
        """Produce one command keyed by its execution id; its RecordMetadata once acknowledged."""
        producer = self._require_producer()
        try:
            async with asyncio.timeout(self.timeout):
                delivery = await producer.send(self.names.commands, value, execution_id.encode())
                return await delivery
        except (KafkaError, TimeoutError) as exc:
            raise self._unavailable(f"acknowledge the {what} of {execution_id}", exc) from None

    def _unavailable(self, doing: str, exc: BaseException) -> KafkaUnavailable:
        cause = None if isinstance(exc, TimeoutError) else exc
        return KafkaUnavailable(self.settings.kafka_bootstrap, self.timeout, doing, cause)

    # -- results ---------------------------------------------------------------------------

    async def listen(self) -> None:
        """Follow cerebelum.events and cerebelum.dlq from now on; call before `start` to `wait`
        without a gap (cerebelum.client.listener)."""
        if self._listener is not None:
            return
        listener = Listener(self.settings, self._event, self._dead_lettered)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.to_thread(listener.start, loop, self.timeout)
        except (KafkaException, TimeoutError) as exc:
            raise self._unavailable("answer", exc) from None
        self._listener = listener

    async def wait(self, execution_id: str, timeout: float | None = 60) -> ExecutionResult:
        """The execution's result once it ends. Needs `listen()` before the start.

        Raises CommandRejected when a worker dead-lettered its start, TimeoutError past
        `timeout`.
        """
        await self.listen()
        if execution_id in self._finished:
            return _outcome(self._finished.pop(execution_id))
        fut = self._waiting.get(execution_id)
        if fut is None:
            fut = self._waiting[execution_id] = asyncio.get_running_loop().create_future()
            # A refusal that lands after every waiter gave up must not be logged as unretrieved.
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        finally:
            if fut.done():
                self._waiting.pop(execution_id, None)
                self._sent_starts.pop(execution_id, None)

    def _event(self, value: bytes) -> None:
        """A terminal-looking event from the listener (on the loop)."""
        event = orjson.loads(value)
        if event["type"] in TERMINAL_EVENTS:
            self._settle(event["execution_id"], _result_of(event))

    def _dead_lettered(self, record: DeadLetter) -> None:
        """A command was dead-lettered: fail the wait on its execution if it was a start."""
        refusal = _refusal(record)
        if refusal is None:
            return
        execution_id, source, reason = refusal
        sent = self._sent_starts.get(execution_id)
        if sent is not None and source is not None and source != sent:
            return  # another producer's copy of the command; the one this client sent stands
        self._settle(execution_id, CommandRejected(execution_id, reason))

    def _settle(self, execution_id: str, outcome: ExecutionResult | CommandRejected) -> None:
        fut = self._waiting.get(execution_id)
        if fut is not None:
            if not fut.done():
                if isinstance(outcome, CommandRejected):
                    fut.set_exception(outcome)
                else:
                    fut.set_result(outcome)
        elif len(self._finished) < MAX_KEPT:  # keep outcomes that come before wait() is called
            self._finished[execution_id] = outcome


def _check_id(value: object, what: str) -> None:
    problem = id_problem(value, what)
    if problem is not None:
        raise InvalidId(what, value, problem)


def _keep(kept: dict[str, tuple[int, int]], key: str, value: tuple[int, int]) -> None:
    kept.pop(key, None)
    kept[key] = value
    if len(kept) > MAX_KEPT:
        del kept[next(iter(kept))]  # the oldest


def _outcome(outcome: ExecutionResult | CommandRejected) -> ExecutionResult:
    if isinstance(outcome, CommandRejected):
        raise outcome
    return outcome


def _refusal(record: DeadLetter) -> tuple[str, tuple[int, int] | None, str] | None:
    """(execution id, source partition and offset, reason) of a DLQ record that refused a start
    (or a command too broken to tell); None for signals, cancels and completions, which end no
    execution: a refused signal or completion leaves its execution running, and a cancel is
    refused only once it ended.
    """
    headers = {k: v for k, v in record.headers}
    raw_id = headers.get(HEADER_DLQ_EXECUTION_ID) or record.key
    if not raw_id:
        return None
    try:
        execution_id = raw_id.decode()
    except UnicodeDecodeError:
        return None
    try:
        body = orjson.loads(record.value) if record.value else None
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and body.get("type") in (
        CMD_SIGNAL,
        CMD_CANCEL,
        CMD_COMPLETE,
        CMD_CHILD_ENDED,
        CMD_PERMIT,
    ):
        return None
    reason = headers.get(HEADER_DLQ_REASON, b"refused").decode(errors="replace")
    try:
        source = (
            int(headers[HEADER_DLQ_SOURCE_PARTITION]),
            int(headers[HEADER_DLQ_SOURCE_OFFSET]),
        )
    except (KeyError, ValueError):
        source = None
    return execution_id, source, reason


def _result_of(event: dict[str, Any]) -> ExecutionResult:
    kind = event["type"]
    if kind == EXECUTION_COMPLETED:
        status, output, error = "completed", event.get("output"), None
    elif kind == EXECUTION_CANCELLED:
        status, output, error = "cancelled", None, cancelled_error(event.get("reason", ""))
    else:
        status, output, error = kind.removeprefix("Execution").lower(), None, event.get("error")
    return ExecutionResult(
        execution_id=event["execution_id"],
        status=status,
        output=output,
        error=error,
        version=event["version"],
    )


def partition_for(execution_id: str, partitions: int = PARTITIONS) -> int:
    """The partition Kafka's default partitioner (murmur2) gives this key, as every client does."""
    return home_partition(execution_id, partitions)
