"""Wire names: topics, consumer groups, header keys and schema versions.

Everything another process (or a producer in another language) must agree on lives here,
so a rename is one edit. Topic *settings* live in `topics/topics.json`; SQL lives in `sql/`.
"""

from __future__ import annotations

# Executions are keyed by execution_id onto this many partitions. Changing it remaps keys
# (murmur2(key) % partitions), so it is fixed for the life of a cluster.
PARTITIONS = 64

TOPIC_COMMANDS = "cerebelum.commands"
TOPIC_EVENTS = "cerebelum.events"
TOPIC_STATE = "cerebelum.state"
TOPIC_DLQ = "cerebelum.dlq"
# Compacted, key = worker id: the workflows (names, versions, graphs) each live worker runs.
TOPIC_WORKFLOWS = "cerebelum.workflows"

WORKER_GROUP = "cerebelum-workers"
# A worker's Kafka client id is this prefix and its worker id (host:pid, or its static instance
# id): the group's description names each member by it (cerebelum.admin.workflows, /cluster).
WORKER_CLIENT_ID_PREFIX = "cerebelum-worker:"
MIRROR_GROUP = "cerebelum-mirror"

# One transactional producer per worker process, its id derived from the worker's id.
TRANSACTIONAL_ID_PREFIX = "cerebelum-worker-"


# Headers on cerebelum.dlq records.
HEADER_DLQ_REASON = "cerebelum.dlq.reason"
HEADER_DLQ_SOURCE_TOPIC = "cerebelum.dlq.source-topic"
HEADER_DLQ_SOURCE_PARTITION = "cerebelum.dlq.source-partition"
HEADER_DLQ_SOURCE_OFFSET = "cerebelum.dlq.source-offset"
# The execution id the command named, when it could be read (the key may be null or wrong).
HEADER_DLQ_EXECUTION_ID = "cerebelum.dlq.execution-id"

# Schema version written into every command and event; readers accept <= their own.
COMMAND_SCHEMA = 1
EVENT_SCHEMA = 1

# Command types (imperatives) on cerebelum.commands.
CMD_START = "StartExecution"
CMD_SIGNAL = "SendSignal"
CMD_CANCEL = "CancelExecution"


def worker_transactional_id(worker_id: str) -> str:
    return f"{TRANSACTIONAL_ID_PREFIX}{worker_id}"


# Header on cerebelum.state records: what restore needs without decoding the snapshot
# (finished / step in flight / parked, and the pending timers). See worker/restore.py.
HEADER_STATE_RECOVERY = "cerebelum.recovery"
# Header on cerebelum.state records: the transactional id of the worker that wrote it. A new
# owner that finds a transaction left open on the partition fences that id (its open
# transaction is aborted at once) instead of waiting for the transaction timeout.
HEADER_STATE_WRITER = "cerebelum.writer"
# Key of the ownership record on cerebelum.state: a new owner's first transaction writes one on
# each partition it took (value: {"writer": its transactional id}), so whoever takes the
# partition next knows whose open transaction to fence. Not a valid execution id (ids begin
# with a letter or a digit), so it never collides with a snapshot.
STATE_OWNER_KEY = b"_owner"
