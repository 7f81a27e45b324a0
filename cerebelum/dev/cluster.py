"""A local Kafka cluster of N nodes (3 by default) in KRaft combined mode, for fault drills.

Each node is a broker and a controller at once (`process.roles=broker,controller`): on a small
machine three JVMs cost less than six, and a combined node killed with -9 takes its broker and
one of three controller votes with it, which the other two outvote. The nodes share the jars of
the single dev broker (.cache/kafka) and keep their state under `state/node-<id>/`.

Starting is, in order:
    1. fetch the jars unless they are cached;
    2. write every node's config (the same quorum of voters on all);
    3. format every node's storage with one cluster id, unless it is formatted;
    4. launch every node that is not running (a node alone cannot start: it waits for a quorum);
    5. wait until each node lists topics and the cluster metadata shows all N brokers.

With three nodes or more the internal topics get replication factor 3 and min ISR 2, and so
does every topic created without explicit settings (kafka.REPLICATED_SETTINGS); Cerebelum's
topics get them from `cerebelum topics apply --replication-factor 3`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cerebelum.dev import DevServiceError, kafka, pid_alive, say

# Three JVMs on a 2-core dev box or CI runner: 384 MB each is plenty for a few hundred
# partitions of test traffic, and leaves memory for the workers and PostgreSQL.
NODE_HEAP = "384m"
# Client ports base..base+n-1 and controller ports base+n..base+2n-1; off the single dev
# broker's 19092/19093.
DEFAULT_BASE_PORT = 19192
# The cluster is ready once every broker has registered with the controllers: a few seconds
# after the last node lists topics.
REGISTER_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Cluster:
    """Where a cluster of `len(ports)` nodes keeps its state, and its (client, controller) ports."""

    root: Path  # the repo, for the jar cache
    state: Path
    ports: tuple[tuple[int, int], ...]
    heap: str = NODE_HEAP

    @property
    def nodes(self) -> list[kafka.KafkaLayout]:
        voters = tuple((i + 1, controller) for i, (_, controller) in enumerate(self.ports))
        return [
            kafka.KafkaLayout(
                self.root,
                port=port,
                controller_port=controller,
                state=self.state / f"node-{i + 1}",
                node_id=i + 1,
                voters=voters,
                heap=self.heap,
            )
            for i, (port, controller) in enumerate(self.ports)
        ]

    def node(self, node_id: int) -> kafka.KafkaLayout:
        return self.nodes[node_id - 1]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @classmethod
    def on_ports(
        cls, root: Path, state: Path, base_port: int, size: int = 3, heap: str = NODE_HEAP
    ) -> Cluster:
        """Client ports base..base+size-1, controller ports base+size..base+2*size-1."""
        ports = tuple((base_port + i, base_port + size + i) for i in range(size))
        return cls(root, state, ports, heap)


def start(cluster: Cluster) -> None:
    """Start every node that is not running; return when all brokers serve and are registered."""
    nodes = cluster.nodes
    first = nodes[0]
    kafka.fetch_jars(first)
    cluster.state.mkdir(parents=True, exist_ok=True)
    for node in nodes:
        kafka.write_config(node)
    formatted = [n for n in nodes if (n.data / "meta.properties").exists()]
    cluster_id = _cluster_id(formatted[0]) if formatted else kafka.new_cluster_id()
    # One JVM per format, all at once: in turn they take a few seconds each on a busy box.
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(lambda node: kafka.format_storage(node, cluster_id), nodes))
    started = time.monotonic()
    pids = {}
    for node in nodes:
        if kafka.is_running(node):
            say(f"Kafka node {node.node_id} already running on {node.bootstrap}")
            continue
        say(f"starting Kafka node {node.node_id} on {node.bootstrap}")
        pids[node.node_id] = kafka.launch(node)
    for node in nodes:
        if node.node_id in pids:
            kafka.wait_ready(node, pids[node.node_id])
    wait_registered(cluster, len(nodes))
    elapsed = time.monotonic() - started
    say(f"Kafka cluster of {len(nodes)} ready in {elapsed:.1f} s: {cluster.bootstrap}")


def start_node(cluster: Cluster, node_id: int) -> None:
    """Start one node again (after `kill_node` or `stop_node`) and wait until it serves."""
    node = cluster.node(node_id)
    kafka.write_config(node)
    kafka.wait_ready(node, kafka.launch(node))


def kill_node(cluster: Cluster, node_id: int, sig: int = signal.SIGKILL) -> int:
    """Send `sig` (kill -9 by default: a crash) to one node; wait until it is gone; its pid."""
    node = cluster.node(node_id)
    pid = kafka.pid_of(node)
    if pid is None:
        raise DevServiceError(f"Kafka node {node_id} is not running")
    os.kill(pid, sig)
    deadline = time.monotonic() + kafka.STOP_TIMEOUT_S
    while pid_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    return pid


def stop(cluster: Cluster) -> None:
    """Stop every node: SIGTERM to all at once, SIGKILL to those alive past the limit.

    All at once, because one by one the last node cannot shut down cleanly: its controlled
    shutdown waits for a controller quorum that the others took with them."""
    running = {n.node_id: pid for n in cluster.nodes if (pid := kafka.pid_of(n)) is not None}
    if not running:
        say("no Kafka node is running")
    for pid in running.values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + kafka.STOP_TIMEOUT_S
    while any(pid_alive(pid) for pid in running.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for node_id, pid in running.items():
        if pid_alive(pid):
            say(f"Kafka node {node_id} did not exit after {kafka.STOP_TIMEOUT_S:.0f} s: killing")
            os.kill(pid, signal.SIGKILL)
    for node in cluster.nodes:
        node.pid_file.unlink(missing_ok=True)
    if running:
        say(f"stopped Kafka nodes {sorted(running)}")


def status(cluster: Cluster) -> dict[str, object]:
    return {
        "bootstrap": cluster.bootstrap,
        "nodes": {str(n.node_id): kafka.status(n) for n in cluster.nodes},
    }


def wait_registered(cluster: Cluster, count: int, timeout: float = REGISTER_TIMEOUT_S) -> None:
    """Until the cluster metadata lists `count` brokers."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        seen = len(brokers(cluster.bootstrap))
        if seen >= count:
            return
        time.sleep(0.3)
    raise DevServiceError(f"only {seen} of {count} Kafka brokers registered within {timeout:.0f} s")


def brokers(bootstrap: str) -> set[int]:
    """The ids of the brokers the cluster metadata lists now (empty if none answers)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        return set(admin.list_topics(timeout=5).brokers)
    except Exception:  # KafkaException: no broker answered within the timeout
        return set()


def under_replicated(bootstrap: str, topics: list[str], replicas: int) -> dict[str, list[int]]:
    """Per topic, its partitions whose ISR is smaller than `replicas` ({} when all are full)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    metadata = admin.list_topics(timeout=10)
    out: dict[str, list[int]] = {}
    for name in topics:
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None:
            raise DevServiceError(f"topic {name} is not in the cluster metadata")
        short = sorted(p.id for p in topic.partitions.values() if len(p.isrs) < replicas)
        if short:
            out[name] = short
    return out


def _cluster_id(node: kafka.KafkaLayout) -> str:
    for line in (node.data / "meta.properties").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id":
            return value.strip()
    raise DevServiceError(f"no cluster.id in {node.data / 'meta.properties'}")


def save(cluster: Cluster) -> None:
    """Remember the ports in state/cluster.json, for `cerebelum dev cluster status|down`."""
    cluster.state.mkdir(parents=True, exist_ok=True)
    (cluster.state / "cluster.json").write_text(json.dumps({"ports": cluster.ports}) + "\n")


def load(root: Path, state: Path) -> Cluster | None:
    """The cluster last started in `state`, or None."""
    try:
        ports = json.loads((state / "cluster.json").read_text())["ports"]
    except (OSError, ValueError, KeyError):
        return None
    return Cluster(root, state, tuple((int(p), int(c)) for p, c in ports))
