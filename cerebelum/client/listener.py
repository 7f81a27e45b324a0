"""Following cerebelum.events and cerebelum.dlq for a client, on librdkafka, in two threads.

A client waits for results: it reads every partition of both topics (read_committed) from
their ends when it began listening, and hands the terminal events and the dead letters to the
event loop. Each topic has its own consumer and thread: a fetch waiting in the broker is
re-checked after every append to any of its partitions, walking all of them, so one fetch over
both topics made every event append cost 128 partition checks for this client instead of 64
(the dead-letter topic is rarely appended to, so its own waiting fetch costs next to nothing).

librdkafka rather than aiokafka here because a listener is woken by every commit on the
cluster: librdkafka decodes in C and keeps an incremental fetch session (KIP-227), so a fetch
names only the partitions that changed. Measured at a steady 50 W3 starts/s: the
listening process used 0.05 of a core instead of 0.20, and the broker less too.

1. ask for the current ends of the 128 partitions (last stable offsets: read_committed);
2. assign the two consumers there, so nothing committed after `start()` returned is missed;
3. poll in their threads; pass on what matters (terminal events, dead letters) to the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, cast

from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec

from cerebelum._librdkafka import take
from cerebelum.config import Settings
from cerebelum.constants import PARTITIONS
from cerebelum.security.kafka import librdkafka_config

log = logging.getLogger(__name__)

# Fetches wait up to this long for data: the broker answers as soon as a record arrives, so a
# result is seen no later, and an idle listener sends one fetch every two seconds.
FETCH_WAIT_MS = 2000
# How long one poll waits when nothing came: only how fast the thread notices close().
POLL_S = 0.5
# Pause before asking again for the offsets of partitions whose leader was not known.
RETRY_S = 0.2
# Per-partition answers not worth asking again. Anything else (a topic just created, a leader
# moving or newer than the broker's metadata: NOT_LEADER_FOR_PARTITION, UNKNOWN_LEADER_EPOCH,
# ...; librdkafka flags few of them retriable) is asked again until the timeout.
PERMANENT = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.UNSUPPORTED_VERSION,
    }
)


class DeadLetter(NamedTuple):
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


OnEvent = Callable[[bytes], None]  # a terminal event's value
OnDeadLetter = Callable[[DeadLetter], None]


class Listener:
    def __init__(self, settings: Settings, on_event: OnEvent, on_dead_letter: OnDeadLetter) -> None:
        self._settings = settings
        self._on_event = on_event
        self._on_dead_letter = on_dead_letter
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        """Position at the current ends and begin following (blocks up to `timeout`; raises
        KafkaException if Kafka does not answer)."""
        self._loop = loop
        ends = _ends(self._settings, timeout)
        names = self._settings.names
        for topic, handle in ((names.events, self._event), (names.dlq, self._dead_letter)):
            consumer = Consumer(
                {
                    **librdkafka_config(self._settings),
                    "group.id": "cerebelum-client",  # never joins or commits: assign only
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "isolation.level": "read_committed",
                    "fetch.wait.max.ms": FETCH_WAIT_MS,
                    # Results flow again within a second of a restarted broker's return (the
                    # default backoff grows to 10 s while it is away).
                    "reconnect.backoff.max.ms": 1000,
                }
            )
            consumer.assign([tp for tp in ends if tp.topic == topic])
            thread = threading.Thread(
                target=self._run, args=(consumer, handle), name=f"cerebelum-listener-{topic}",
                daemon=True,
            )  # fmt: skip
            self._threads.append(thread)
            thread.start()

    def close(self) -> None:
        """Stop following (blocks until the threads ended)."""
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, consumer: Consumer, handle: Callable[[Message], None]) -> None:
        try:
            while not self._stop.is_set():
                for m in take(consumer, POLL_S):
                    if m.error() is not None:
                        if m.error().fatal():
                            raise KafkaException(m.error())
                        continue  # transport errors: librdkafka reconnects by itself
                    handle(m)
        except Exception:  # noqa: BLE001 - a broken listener must be loud, not silent
            log.exception("the client's listener failed")
        finally:
            consumer.close()

    def _event(self, m: Message) -> None:
        value = m.value()
        # Cheap pre-filter: only terminal events matter (decoded on the loop).
        if value and b'"Execution' in value and b"ExecutionStarted" not in value:
            self._to_loop(self._on_event, value)

    def _dead_letter(self, m: Message) -> None:
        headers = cast(list[tuple[str, bytes]], m.headers() or [])
        self._to_loop(self._on_dead_letter, DeadLetter(m.key(), m.value(), headers))

    def _to_loop(self, fn: Callable[[Any], None], arg: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, arg)


def _ends(settings: Settings, timeout: float) -> list[TopicPartition]:
    """The last stable offsets of every partition of both topics. Partitions whose answer is a
    retriable error (a leader moving, a topic just created) are asked again until `timeout`."""
    deadline = time.monotonic() + timeout
    topics = (settings.names.events, settings.names.dlq)
    missing = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
    ends: list[TopicPartition] = []
    while True:
        left = max(deadline - time.monotonic(), 0.1)
        # A new client each round: one that was answered from stale metadata may keep asking
        # the old leader.
        admin = AdminClient(librdkafka_config(settings))
        futures = admin.list_offsets(
            {tp: OffsetSpec.latest() for tp in missing},  # type: ignore[no-untyped-call]
            isolation_level=IsolationLevel.READ_COMMITTED,
            request_timeout=left,
        )
        missing = []
        for tp, future in futures.items():
            try:
                ends.append(TopicPartition(tp.topic, tp.partition, future.result(left).offset))
            except KafkaException as exc:
                error = exc.args[0]
                transient = not error.fatal() and error.code() not in PERMANENT
                if not transient or time.monotonic() >= deadline:
                    raise
                missing.append(tp)
        if not missing:
            return ends
        time.sleep(RETRY_S)
