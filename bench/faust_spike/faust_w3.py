"""The W3 workflow (three sequential steps) as a faust-streaming agent with an exactly_once table.

Spike only (see docs/faust-spike.md): kept out of the package, run from its own venv with
faust-streaming 0.15.3 installed. Start a worker with

    SPIKE_KAFKA=127.0.0.1:29092 SPIKE_WORKER_ID=1 python faust_w3.py worker -l info

Input: spike.commands (64 partitions), key = execution id, value = the same StartExecution JSON
that cerebelum.core.commands.start_command writes. Output: spike.events, one JSON record per
event in the same shape as cerebelum.core.events.make_event (execution_id, version, type,
schema, at, fields), and a Table `executions` (changelog `spike-faust-executions-changelog`)
keyed by execution id, holding the execution's state in the shape of Execution.to_record().

Two ways to run the steps (SPIKE_FAUST_MODE):

* "loop" (default): as close to Cerebelum's engine as faust allows. A step runs only once the
  previous step's result is committed: each step is its own message on spike.commands
  (RunStep), sent in the same faust transaction as the table write and the events, so the next
  step is read (read_committed) only after that transaction commits. 4 input messages per
  execution: StartExecution, RunStep x 3.
* "inline": faust's cheapest shape. The agent runs all three steps while handling the
  StartExecution message, writing the table and emitting the events after each step; all of it
  becomes visible together when faust commits its transaction (every broker_commit_interval).
  A crash re-runs the whole execution, not just the step in flight.

Faust's exactly_once mode only produces transactionally to topics its own consumer knows:
TransactionManager.send asks the consumer for the destination partition, and for a topic the
consumer has no metadata for it gets None and falls back to the plain, non-transactional
producer, silently. spike.events is therefore subscribed by a no-op agent, which puts it in the
app's co-partitioned topic group (SPIKE_FAUST_SUBSCRIBE_EVENTS=0 leaves it out).

Diagnostics (WARNING lines, counted by run.py): `spike-skip` when a start-command finds its
execution already in the table (never expected: every start is sent once), `spike-gap` when the
agent's offsets on a partition do not follow each other (in "inline" mode spike.commands holds
no transaction markers, so a forward gap is a message the agent never saw), and, with
SPIKE_FAUST_DEBUG=1, `spike-debug` every 5 s (topic groups, transactional producers, isolation).
"""

from __future__ import annotations

import os
import time
from typing import Any

import faust
import orjson

KAFKA = os.environ.get("SPIKE_KAFKA", "127.0.0.1:29092")
MODE = os.environ.get("SPIKE_FAUST_MODE", "loop")
WORKER_ID = int(os.environ.get("SPIKE_WORKER_ID", "1"))
SUBSCRIBE_EVENTS = os.environ.get("SPIKE_FAUST_SUBSCRIBE_EVENTS", "1") == "1"
DATADIR = os.environ.get("SPIKE_FAUST_DATADIR", f"/tmp/spike/faust-data/{WORKER_ID}")
os.makedirs(os.path.dirname(DATADIR), exist_ok=True)
PARTITIONS = 64
WORKFLOW = "w3"
WORKFLOW_VERSION = "spike-w3"
SCHEMA = 1

app = faust.App(
    "spike-faust",
    broker=f"kafka://{KAFKA}",
    processing_guarantee="exactly_once",
    store="memory://",
    topic_partitions=PARTITIONS,
    topic_replication_factor=1,
    # Same failure detection as the Cerebelum worker under test (session 6 s, heartbeat 1 s,
    # rebalance timeout = session + 20 s).
    broker_session_timeout=6.0,
    broker_heartbeat_interval=1.0,
    broker_rebalance_timeout=26.0,
    consumer_auto_offset_reset="earliest",
    # Two workers on one host: each needs its own identity for faust's assignor.
    # (web_enabled=False does not stop `faust worker` from binding its web port, 6066 by
    # default, so each worker gets its own.)
    web_enabled=False,
    web_host="127.0.0.1",
    web_port=6100 + WORKER_ID,
    canonical_url=f"http://127.0.0.1:{6100 + WORKER_ID}",
    datadir=DATADIR,
    # Defaults, written out: commit (= end the transaction) every 2.8 s or 10,000 messages,
    # and one standby replica of each table partition on another worker when there is one.
    broker_commit_interval=float(os.environ.get("SPIKE_FAUST_COMMIT_INTERVAL", "2.8")),
    broker_commit_every=10_000,
    table_standby_replicas=int(os.environ.get("SPIKE_FAUST_STANDBYS", "1")),
)

commands = app.topic(
    "spike.commands",
    partitions=PARTITIONS,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)
events = app.topic(
    "spike.events",
    partitions=PARTITIONS,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)
executions = app.Table(
    "executions",
    partitions=PARTITIONS,
    # key_type/value_type bytes is what makes the table (and its changelog) use the raw
    # serializer; a schema= alone leaves the table's own serializers at json.
    key_type=bytes,
    value_type=bytes,
)


# --- the workflow: the same three steps as tests/apps.py `w3` ---------------------------------


def step1(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"n": inputs["n"] + 1}


def step2(step1: dict[str, Any]) -> dict[str, Any]:
    return {"n": step1["n"] * 2}


def step3(step2: dict[str, Any]) -> dict[str, Any]:
    return step2


STEPS = [("step1", step1, "inputs"), ("step2", step2, "step1"), ("step3", step3, "step2")]


def _run_step(state: dict[str, Any], index: int) -> Any:
    _, fn, param = STEPS[index]
    arg = state["inputs"] if param == "inputs" else state["results"].get(param)
    return fn(arg)


# --- recording: events in Cerebelum's shape, state in Execution.to_record()'s shape -----------


class Recorder:
    def __init__(self, state: dict[str, Any], key: bytes) -> None:
        self.state = state
        self.key = key
        self.pending: list[dict[str, Any]] = []

    def record(self, type_: str, **fields: Any) -> None:
        now = int(time.time() * 1000)
        self.state["version"] += 1
        self.state["updated_at"] = now
        self.pending.append(
            {
                "execution_id": self.state["id"],
                "version": self.state["version"],
                "type": type_,
                "schema": SCHEMA,
                "at": now,
                **fields,
            }
        )

    async def flush(self) -> None:
        """Write the table, then send the events recorded since the last flush."""
        executions[self.key] = orjson.dumps(self.state)
        for e in self.pending:
            await events.send(key=self.key, value=orjson.dumps(e))
        self.pending.clear()


def _new_state(cmd: dict[str, Any]) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "id": cmd["execution_id"],
        "workflow": WORKFLOW,
        "workflow_version": WORKFLOW_VERSION,
        "status": "running",
        "inputs": cmd.get("inputs", {}),
        "results": {},
        "cursor": -1,
        "attempt": 0,
        "version": 0,
        "output": None,
        "error": None,
        "started_at": now,
        "updated_at": now,
    }


def _schedule(rec: Recorder, index: int) -> None:
    rec.state["cursor"] = index
    rec.state["attempt"] = 1
    rec.record("StepScheduled", step=STEPS[index][0], index=index, attempt=1)


def _complete(rec: Recorder, index: int, value: Any) -> None:
    name = STEPS[index][0]
    rec.state["results"][name] = value
    rec.record("StepCompleted", step=name, attempt=1, result=value)


def _finish(rec: Recorder, value: Any) -> None:
    rec.state["status"] = "completed"
    rec.state["output"] = value
    rec.record("ExecutionCompleted", output=value)


async def _start(key: bytes, cmd: dict[str, Any], where: str) -> dict[str, Any] | None:
    if executions.get(key) is not None:
        # Idempotent start. In these runs every start-command is sent once, so this only
        # happens when the table holds state for an execution whose start was never committed.
        app.log.warning("spike-skip start of %s at %s: the table has it already", key, where)
        return None
    if cmd.get("workflow") != WORKFLOW:
        return None
    state = _new_state(cmd)
    rec = Recorder(state, key)
    rec.record("ExecutionStarted", workflow=WORKFLOW, workflow_version=WORKFLOW_VERSION,
               inputs=state["inputs"])
    _schedule(rec, 0)
    if MODE == "inline":
        for i in range(len(STEPS)):
            if i > 0:
                _schedule(rec, i)
            value = _run_step(state, i)
            _complete(rec, i, value)
            if i == len(STEPS) - 1:
                _finish(rec, value)
            await rec.flush()  # table written after every step, its events sent
    else:
        await rec.flush()
        await commands.send(key=key, value=orjson.dumps({"type": "RunStep", "step": 0}))
    return state


async def _run_step_command(key: bytes, cmd: dict[str, Any]) -> None:
    raw = executions.get(key)
    if raw is None:
        return
    state = orjson.loads(raw)
    index = cmd["step"]
    if state["status"] != "running" or state["cursor"] != index:
        return  # stale or repeated: ignore, as Cerebelum's decide does
    rec = Recorder(state, key)
    value = _run_step(state, index)
    _complete(rec, index, value)
    if index + 1 < len(STEPS):
        _schedule(rec, index + 1)
        await rec.flush()
        await commands.send(key=key, value=orjson.dumps({"type": "RunStep", "step": index + 1}))
    else:
        _finish(rec, value)
        await rec.flush()


_last_offset: dict[int, int] = {}


@app.agent(commands)
async def w3(stream: faust.Stream[bytes]) -> None:
    async for event in stream.events():
        key = event.key
        msg = event.message
        last = _last_offset.get(msg.partition)
        if last is not None and msg.offset != last + 1:
            # Offsets of spike.commands this worker did not process in order: a seek after a
            # rebalance (expected: back to the committed offset) or a skip.
            app.log.warning("spike-gap partition %d: %d -> %d", msg.partition, last, msg.offset)
        _last_offset[msg.partition] = msg.offset
        try:
            cmd = orjson.loads(event.value)
        except orjson.JSONDecodeError:
            continue
        kind = cmd.get("type")
        if kind == "StartExecution":
            await _start(key, cmd, f"{msg.partition}@{msg.offset}")
        elif kind == "RunStep":
            await _run_step_command(key, cmd)


if SUBSCRIBE_EVENTS:

    @app.agent(events)
    async def _own_events(stream: faust.Stream[bytes]) -> None:
        """No-op: puts spike.events into the app's topic group so sends to it are transactional."""
        async for _ in stream:
            pass


if os.environ.get("SPIKE_FAUST_DEBUG") == "1":

    @app.timer(5.0)
    async def _debug() -> None:
        """Which topic groups and transactional producers this worker has."""
        producers = sorted(type(app.producer)._transaction_producers)
        kafka_consumer = app.consumer._thread._consumer  # type: ignore[attr-defined]
        app.log.warning(
            "spike-debug topic_groups=%r transactional_producers=%d first=%r isolation=%r",
            dict(app.assignor._topic_groups),
            len(producers),
            producers[:3],
            getattr(kafka_consumer._fetcher, "_isolation_level", None),
        )


if __name__ == "__main__":
    app.main()
