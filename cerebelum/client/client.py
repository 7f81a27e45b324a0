"""The Python client: start executions by producing start-commands, and wait for their results.

    async with Client(Settings.from_env()) as client:
        execution_id = await client.start("order", {"order_id": 7})
        result = await client.wait(execution_id, timeout=30)

`start` produces straight to cerebelum.commands (key = execution id), exactly what any Kafka
producer in any language may do (docs/start-command.md). `wait` follows cerebelum.events,
where the execution's terminal event appears the moment its transaction commits.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from cerebelum.config import Settings
from cerebelum.constants import PARTITIONS, TOPIC_COMMANDS, TOPIC_EVENTS
from cerebelum.core.commands import cancel_command, signal_command, start_command
from cerebelum.core.events import EXECUTION_COMPLETED, TERMINAL_EVENTS
from cerebelum.core.ids import home_partition


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    execution_id: str
    status: str  # "completed" or "failed"
    output: Any = None
    error: dict[str, Any] | None = None
    version: int = 0


class Client:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self._producer: AIOKafkaProducer | None = None
        self._listener: AIOKafkaConsumer | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[ExecutionResult]] = {}
        self._finished: dict[str, ExecutionResult] = {}

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

    async def connect(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            # A few ms of linger batches bursts of starts into few requests.
            linger_ms=2,
        )
        await self._producer.start()

    async def close(self) -> None:
        if self._listen_task is not None:
            self._listen_task.cancel()
            await asyncio.gather(self._listen_task, return_exceptions=True)
        if self._listener is not None:
            await self._listener.stop()
        if self._producer is not None:
            await self._producer.stop()

    # -- commands --------------------------------------------------------------------------

    async def start(
        self, workflow: str, inputs: Any = None, execution_id: str | None = None
    ) -> str:
        """Start an execution (idempotent by id: a second start with the same id starts nothing)."""
        execution_id = execution_id or uuid.uuid4().hex
        fut = await self.start_nowait(workflow, inputs, execution_id)
        await fut
        return execution_id

    async def start_nowait(
        self, workflow: str, inputs: Any, execution_id: str
    ) -> asyncio.Future[Any]:
        """Queue a start-command; the returned future resolves once Kafka acknowledges it."""
        assert self._producer is not None, "call connect() or use `async with Client()`"
        value = start_command(execution_id, workflow, {} if inputs is None else inputs)
        fut: asyncio.Future[Any] = await self._producer.send(
            TOPIC_COMMANDS, value, execution_id.encode()
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
        assert self._producer is not None, "call connect() or use `async with Client()`"
        value = signal_command(execution_id, signal, payload)
        await (await self._producer.send(TOPIC_COMMANDS, value, execution_id.encode()))

    async def cancel(self, execution_id: str, reason: str = "cancelled") -> None:
        """Cancel an execution: it records why, runs no further step, drops its timers."""
        assert self._producer is not None, "call connect() or use `async with Client()`"
        value = cancel_command(execution_id, reason)
        await (await self._producer.send(TOPIC_COMMANDS, value, execution_id.encode()))

    async def run(
        self,
        workflow: str,
        inputs: Any = None,
        execution_id: str | None = None,
        timeout: float = 60,
    ) -> ExecutionResult:
        """Start an execution and wait for its end."""
        await self.listen()
        execution_id = execution_id or uuid.uuid4().hex
        await self.start(workflow, inputs, execution_id)
        return await self.wait(execution_id, timeout)

    # -- results ---------------------------------------------------------------------------

    async def listen(self) -> None:
        """Follow cerebelum.events from now on; call before `start` to `wait` without a gap."""
        if self._listener is not None:
            return
        self._listener = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            # Short fetch waits: wait() is latency-bound, not throughput-bound.
            fetch_max_wait_ms=5,
        )
        await self._listener.start()
        tps = [TopicPartition(TOPIC_EVENTS, p) for p in range(PARTITIONS)]
        self._listener.assign(tps)
        await self._listener.seek_to_end(*tps)
        for tp in tps:  # resolve the lazy seek now, so nothing committed after this is missed
            await self._listener.position(tp)
        self._listen_task = asyncio.get_running_loop().create_task(self._follow())

    async def wait(self, execution_id: str, timeout: float | None = 60) -> ExecutionResult:
        """The execution's result once it ends. Needs `listen()` before the start."""
        await self.listen()
        if execution_id in self._finished:
            return self._finished.pop(execution_id)
        fut = self._waiting.get(execution_id)
        if fut is None:
            fut = self._waiting[execution_id] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        finally:
            if fut.done():
                self._waiting.pop(execution_id, None)

    async def _follow(self) -> None:
        assert self._listener is not None
        while True:
            batches = await self._listener.getmany(timeout_ms=500)
            for records in batches.values():
                for r in records:
                    # Cheap pre-filter: only terminal events are decoded.
                    if b"Execution" not in r.value or b"ExecutionStarted" in r.value:
                        continue
                    event = orjson.loads(r.value)
                    if event["type"] not in TERMINAL_EVENTS:
                        continue
                    self._resolve(_result_of(event))

    def _resolve(self, result: ExecutionResult) -> None:
        fut = self._waiting.get(result.execution_id)
        if fut is not None:
            if not fut.done():
                fut.set_result(result)
        elif len(self._finished) < 100_000:  # keep results that end before wait() is called
            self._finished[result.execution_id] = result


def _result_of(event: dict[str, Any]) -> ExecutionResult:
    ok = event["type"] == EXECUTION_COMPLETED
    return ExecutionResult(
        execution_id=event["execution_id"],
        status="completed" if ok else event["type"].removeprefix("Execution").lower(),
        output=event.get("output") if ok else None,
        error=None if ok else event.get("error"),
        version=event["version"],
    )


def partition_for(execution_id: str, partitions: int = PARTITIONS) -> int:
    """The partition Kafka's default partitioner (murmur2) gives this key, as every client does."""
    return home_partition(execution_id, partitions)
