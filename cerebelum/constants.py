"""Wire names: topics, consumer groups, header keys and schema versions.

Everything another process (or a producer in another language) must agree on lives here,
so a rename is one edit. Topic *settings* live in `topics/topics.json`; SQL lives in `sql/`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# Executions are keyed by execution_id onto this many partitions. Changing it remaps keys
# (murmur2(key) % partitions), so it is fixed for the life of a cluster.
PARTITIONS = 64

# --- namespaces --------------------------------------------------------------------------
# A namespace is its own set of topics, consumer groups, transactional ids and PostgreSQL
# schema, so several apps share one Kafka cluster and one database without sharing a worker
# group (decisions.md, "Namespaces"). The default namespace keeps the names Cerebelum had
# before namespaces existed, so clusters made then keep working unchanged.
DEFAULT_NAMESPACE = "default"
# Lowercase letters, digits and '-', at most 40: the name goes into topic names (dots are the
# separator, so no namespace's prefix is another's), group ids and a PostgreSQL identifier
# (63 bytes at most: "cerebelum_mirrored_" and 40 characters fit).
NAMESPACE_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


def namespace_problem(namespace: object) -> str | None:
    """Why `namespace` cannot name a namespace, or None if it can."""
    if not isinstance(namespace, str) or NAMESPACE_PATTERN.fullmatch(namespace) is None:
        return (
            f"namespace must be 1-40 lowercase letters, digits and '-', starting with a letter "
            f"or a digit, not {namespace!r}"
        )
    return None


@dataclass(frozen=True, slots=True)
class Names:
    """Every Kafka and PostgreSQL name of one namespace (`names(namespace)` builds it).

    The default namespace: `cerebelum.commands`, group `cerebelum-workers`, ... (as before
    namespaces), tables in the connection's own schema. Namespace `ns`: everything under the
    one prefix `cerebelum.ns.` (topics `cerebelum.ns.commands`, groups `cerebelum.ns.workers`,
    transactional ids `cerebelum.ns.worker-<id>`), so one prefixed ACL covers a namespace and no
    other; tables in schema `cerebelum_ns`.
    """

    namespace: str
    commands: str
    events: str
    state: str
    dlq: str
    # Compacted, key = worker id: the workflows (names, versions, graphs) each live worker runs.
    workflows: str
    worker_group: str
    mirror_group: str
    # A worker's Kafka client id is this prefix and its worker id (host:pid, or its static
    # instance id): the group's description names each member by it (admin.workflows, /cluster).
    worker_client_id_prefix: str
    # One transactional producer per worker process, its id derived from the worker's id.
    transactional_id_prefix: str
    # The PostgreSQL schema of the namespace's tables; None: the connection's own search_path
    # (the default namespace, where the tables always were).
    schema: str | None
    # LISTEN/NOTIFY channels are global to a PostgreSQL server: one per namespace.
    mirrored_channel: str

    @property
    def is_default(self) -> bool:
        return self.namespace == DEFAULT_NAMESPACE

    @property
    def topics(self) -> tuple[str, str, str, str, str]:
        return (self.commands, self.events, self.state, self.dlq, self.workflows)

    @property
    def acl_prefix(self) -> str:
        """The prefix of every topic, group and transactional id of a non-default namespace."""
        return f"cerebelum.{self.namespace}."

    def worker_client_id(self, worker_id: str) -> str:
        """The worker's Kafka client id: its name in /cluster, the partition grid and step runs."""
        return f"{self.worker_client_id_prefix}{worker_id}"

    def worker_transactional_id(self, worker_id: str) -> str:
        return f"{self.transactional_id_prefix}{worker_id}"

    def topic(self, default_name: str) -> str:
        """The namespace's name of the default namespace's topic `default_name` (the names
        topics/topics.json declares); a name that is not one of them is returned as is."""
        default = names(DEFAULT_NAMESPACE)
        return dict(zip(default.topics, self.topics, strict=True)).get(default_name, default_name)


@functools.cache
def names(namespace: str = DEFAULT_NAMESPACE) -> Names:
    """The names of `namespace`; ValueError if it is not a valid namespace name."""
    problem = namespace_problem(namespace)
    if problem is not None:
        raise ValueError(problem)
    if namespace == DEFAULT_NAMESPACE:
        return Names(
            namespace=namespace,
            commands="cerebelum.commands",
            events="cerebelum.events",
            state="cerebelum.state",
            dlq="cerebelum.dlq",
            workflows="cerebelum.workflows",
            worker_group="cerebelum-workers",
            mirror_group="cerebelum-mirror",
            worker_client_id_prefix="cerebelum-worker:",
            transactional_id_prefix="cerebelum-worker-",
            schema=None,
            mirrored_channel="cerebelum_mirrored",
        )
    prefix = f"cerebelum.{namespace}."
    ident = namespace.replace("-", "_")
    return Names(
        namespace=namespace,
        commands=f"{prefix}commands",
        events=f"{prefix}events",
        state=f"{prefix}state",
        dlq=f"{prefix}dlq",
        workflows=f"{prefix}workflows",
        worker_group=f"{prefix}workers",
        mirror_group=f"{prefix}mirror",
        worker_client_id_prefix=f"{prefix}worker:",
        transactional_id_prefix=f"{prefix}worker-",
        schema=f"cerebelum_{ident}",
        mirrored_channel=f"cerebelum_mirrored_{ident}",
    )


# The default namespace's names (what `Settings().names` gives).
DEFAULT_NAMES = names(DEFAULT_NAMESPACE)


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
CMD_COMPLETE = "CompleteStep"
CMD_CHILD_ENDED = "ChildEnded"
CMD_PERMIT = "Permit"


# Header on cerebelum.state records: what restore needs without decoding the snapshot
# (finished / step in flight / parked, and the pending timers). See worker/restore.py.
HEADER_STATE_RECOVERY = "cerebelum.recovery"
# Header on cerebelum.state records: the transactional id of the worker that wrote it. A new
# owner that finds a transaction left open on the partition fences that id (its open
# transaction is aborted at once) instead of waiting for the transaction timeout.
HEADER_STATE_WRITER = "cerebelum.writer"
# Header on cerebelum.state records of live executions: "<workflow>\n<version>", so a restore
# finds the executions whose version the worker lacks (to block them at once), and the blocked
# ones it can now resume, without decoding every snapshot (decisions.md §6).
HEADER_STATE_WORKFLOW = "cerebelum.workflow"
# Key of the ownership record on cerebelum.state: a new owner's first transaction writes one on
# each partition it took (value: {"writer": its transactional id}), so whoever takes the
# partition next knows whose open transaction to fence. Not a valid execution id (ids begin
# with a letter or a digit), so it never collides with a snapshot.
STATE_OWNER_KEY = b"_owner"
