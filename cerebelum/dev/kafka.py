"""A single-node Kafka broker in KRaft combined mode, run from the official Maven Central jars.

Layout under the repo root:
    .cache/kafka/<version>/libs/   the jars (downloaded once by Maven; COMPLETE marks a full set)
    .dev/kafka/server.properties   broker + controller config
    .dev/kafka/log4j2.properties   logging to .dev/kafka/logs/server.log
    .dev/kafka/data/               the log dirs (meta.properties once formatted)
    .dev/kafka/kafka.pid, kafka.out
    .dev/kafka/tls/, client.env    the SASL_SSL listener's keystore, what its clients need
                                   (cerebelum.dev.kafka_sasl)

Listeners: PLAINTEXT on the client port, SASL_SSL on the client port + 2 (always on, so the
security tests need no second JVM), the KRaft controller PLAINTEXT on its port; brokers talk
to each other on the PLAINTEXT listener. All on 127.0.0.1 only.

Starting is, in order:
    1. fetch the jars unless COMPLETE is there;
    2. write the config files;
    3. format the storage unless data/meta.properties exists;
    4. launch `kafka.Kafka` detached in its own session;
    5. wait until an admin client can list topics;
    6. upsert the SCRAM users, write .dev/kafka/client.env.
A broker already running with another server.properties (an older version's) is restarted
with the new one; one with the same is left alone.
The caller holds the root's `dev up` lock (services.up), so two starts never overlap. A broker
of this root that is already alive (found by its pid file or, failing that, in /proc by the
server.properties path on its command line) is waited for, never launched twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cerebelum.dev import (
    DevServiceError,
    kafka_sasl,
    pid_alive,
    port_answers,
    processes_with,
    read_pid,
    say,
)

# 4.1.x: aiokafka's v0 transaction requests (init, add, offsets, commit, abort) pass here.
KAFKA_VERSION = "4.1.2"
# The log4j2 that kafka-server itself depends on; api, core and the binding must agree.
LOG4J_VERSION = "2.25.3"
HOST = "127.0.0.1"
# Off the well-known 9092/9093 so a developer's own Kafka on the machine does not clash.
DEFAULT_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093
# The SASL_SSL listener's port is the client port + this (the controller has + 1).
SASL_PORT_OFFSET = 2
# Enough for a dev broker with a few hundred partitions; the rest of RAM goes to page cache.
HEAP = "1g"
# A cold start (JVM, KRaft election, log recovery) takes 2-4 s here; 90 s covers a slow CI box.
READY_TIMEOUT_S = 90.0
# Kafka flushes and closes its logs on SIGTERM; past 30 s something is stuck and we SIGKILL.
STOP_TIMEOUT_S = 30.0

# Kafka 4.x uses slf4j 1.7 but ships no backend: log4j-slf4j-impl is the one binding for it.
POM_TEMPLATE = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.cerebelum</groupId>
  <artifactId>local-kafka</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-api</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>3.8.1</version>
      </plugin>
    </plugins>
  </build>
</project>
"""

LOG4J2_TEMPLATE = """\
status = warn
name = cerebelum-dev-kafka

appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {logs}/server.log
appender.file.filePattern = {logs}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
# Three 50 MB files keep hours of dev history without filling the disk.
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3

rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file

# One line per partition load or state change: thousands with 64-partition topics.
logger.storage.name = org.apache.kafka.storage.internals.log
logger.storage.level = WARN
logger.partition.name = kafka.cluster.Partition
logger.partition.level = WARN
logger.logmanager.name = kafka.log.LogManager
logger.logmanager.level = WARN
logger.replication.name = org.apache.kafka.controller.ReplicationControlManager
logger.replication.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
"""


@dataclass(frozen=True, slots=True)
class KafkaLayout:
    """Where one repo's broker keeps its jars, config and data, and which ports it uses."""

    root: Path
    version: str = KAFKA_VERSION
    port: int = DEFAULT_PORT
    controller_port: int = DEFAULT_CONTROLLER_PORT
    # A node of a multi-node cluster (cerebelum.dev.cluster) keeps its state elsewhere, has its
    # own id and names every controller of the quorum as (node id, controller port).
    state: Path | None = None
    node_id: int = 1
    voters: tuple[tuple[int, int], ...] = ()
    heap: str = HEAP

    @property
    def cache(self) -> Path:
        return self.root / ".cache" / "kafka" / self.version

    @property
    def libs(self) -> Path:
        return self.cache / "libs"

    @property
    def complete_marker(self) -> Path:
        return self.cache / "COMPLETE"

    @property
    def home(self) -> Path:
        return self.state if self.state is not None else self.root / ".dev" / "kafka"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def server_properties(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j_properties(self) -> Path:
        return self.home / "log4j2.properties"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def out_file(self) -> Path:
        return self.home / "kafka.out"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def sasl_port(self) -> int:
        return self.port + SASL_PORT_OFFSET

    @property
    def sasl_bootstrap(self) -> str:
        return f"{HOST}:{self.sasl_port}"


def fetch_jars(layout: KafkaLayout) -> None:
    """Download Kafka and its logging backend into the cache once; a COMPLETE marker skips it."""
    if layout.complete_marker.exists():
        return
    if shutil.which("mvn") is None:
        raise DevServiceError("mvn not found: run scripts/bootstrap.sh or apt-get install maven")
    say(f"fetching Kafka {layout.version} jars with Maven (one time, ~1 min)...")
    started = time.monotonic()
    layout.cache.mkdir(parents=True, exist_ok=True)
    pom = layout.cache / "pom.xml"
    pom.write_text(POM_TEMPLATE.format(kafka=layout.version, log4j=LOG4J_VERSION))
    # Copy into a scratch folder and rename, so an interrupted download never looks complete.
    partial = layout.cache / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(layout.libs, ignore_errors=True)
    command = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={partial}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise DevServiceError(
            f"Maven could not fetch Kafka {layout.version}:\n{result.stdout[-3000:]}"
        )
    _check_one_slf4j_binding(partial)
    partial.rename(layout.libs)
    layout.complete_marker.write_text(f"kafka {layout.version}, log4j {LOG4J_VERSION}\n")
    say(f"  {len(list(layout.libs.glob('*.jar')))} jars in {time.monotonic() - started:.0f} s")


def _check_one_slf4j_binding(libs: Path) -> None:
    bindings = [jar.name for jar in libs.glob("*.jar") if _is_slf4j_binding(jar.name)]
    if len(bindings) != 1:
        raise DevServiceError(f"expected exactly one slf4j binding in {libs}, found {bindings}")


# Any of these on the classpath is an slf4j backend; two of them make slf4j pick one at random.
SLF4J_BINDINGS = (
    "log4j-slf4j-impl",
    "log4j-slf4j2-impl",
    "slf4j-reload4j",
    "slf4j-log4j12",
    "slf4j-simple",
    "logback-classic",
)


def _is_slf4j_binding(jar_name: str) -> bool:
    return jar_name.startswith(SLF4J_BINDINGS)


def write_config(layout: KafkaLayout) -> None:
    """Write server.properties and log4j2.properties (rewritten each start; edits do not stick)."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    layout.data.mkdir(parents=True, exist_ok=True)
    layout.server_properties.write_text(_server_properties(layout))
    layout.log4j_properties.write_text(LOG4J2_TEMPLATE.format(logs=layout.logs))


# How Cerebelum wants a broker to behave, beyond where it listens and stores: the same for
# `cerebelum dev up` and docker-compose.yml (a unit test holds them together).
CLUSTER_SETTINGS = {
    # A typo'd topic name must fail, not silently create a 1-partition topic.
    "auto.create.topics.enable": "false",
    # Tests start consumers one by one; the default 3 s wait only slows them down.
    "group.initial.rebalance.delay.ms": "0",
    # Let workers trade stability for detection speed down to a 1 s session timeout (the
    # default minimum, 6 s, makes a 3 s timeout fail the join with InvalidSessionTimeout).
    "group.min.session.timeout.ms": "1000",
    # The workers' group uses the KIP-848 protocol, whose session timeout and heartbeat are
    # the broker's: 3 s to detect a dead worker (the defaults, 45 s and 5 s, would make a
    # failover take most of a minute), heartbeats every second so a survivor hears of its
    # new partitions within a second of the decision.
    "group.consumer.session.timeout.ms": "3000",
    "group.consumer.min.session.timeout.ms": "1000",
    "group.consumer.heartbeat.interval.ms": "1000",
    "group.consumer.min.heartbeat.interval.ms": "500",
    # A dead worker's open transaction blocks the new owners of its partitions until the
    # coordinator aborts it: check for timed-out transactions every 0.5 s, not every 10 s.
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "500",
    # KIP-890 produce-time verification answers a produce that races the previous commit's
    # markers with NOT_ENOUGH_REPLICAS (KAFKA-15459), which the client retries after its
    # backoff: a latency tail on ~1 transaction in 20. Our clients add partitions explicitly
    # (AddPartitionsToTxn), which is what the verification double-checks.
    "transaction.partition.verification.enable": "false",
    # An idle broker should cost nothing (issue 9). The active controller appends a no-op
    # record to the metadata log every 0.5 s by default (KIP-835, so that brokers notice a
    # stale controller); on one or three nodes every 5 s is plenty and saves ~3 ms of CPU a second.
    "metadata.max.idle.interval.ms": "5000",
    # Topics are declared (topics/topics.json); this only matters for a stray auto-creation.
    "num.partitions": "1",
    # One node: the internal topics' defaults (RF 3, min ISR 2) could never be met.
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
}


# What three nodes or more change: the internal topics get the defaults meant for production
# (RF 3, min ISR 2) and a dead node is noticed in 3 s, not 9, so that its partitions get new
# leaders (and it leaves their ISRs) while the clients are still retrying their first requests.
REPLICATED_SETTINGS = {
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
}


def _listeners(layout: KafkaLayout) -> dict[str, str]:
    """PLAINTEXT for clients and CONTROLLER; a single-node broker (the dev broker) also has the
    SASL_SSL listener on port + 2. The nodes of a cluster (cerebelum.dev.cluster) do not: their
    ports sit next to each other, so port + 2 is another node's."""
    plain = f"PLAINTEXT://{HOST}:{layout.port}"
    controller = f"CONTROLLER://{HOST}:{layout.controller_port}"
    if layout.voters:
        return {
            "listeners": f"{plain},{controller}",
            "advertised.listeners": plain,
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        }
    sasl = f"SASL_SSL://{HOST}:{layout.sasl_port}"
    return {
        "listeners": f"{plain},{controller},{sasl}",
        "advertised.listeners": f"{plain},{sasl}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "SASL_SSL:SASL_SSL",
        **kafka_sasl.listener_properties(layout.root, layout.home, layout.sasl_port),
    }


def _server_properties(layout: KafkaLayout) -> str:
    voters = layout.voters or ((layout.node_id, layout.controller_port),)
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(layout.node_id),
        "controller.quorum.voters": ",".join(f"{n}@{HOST}:{port}" for n, port in voters),
        **_listeners(layout),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(layout.data),
        **CLUSTER_SETTINGS,
        **(REPLICATED_SETTINGS if len(voters) >= 3 else {}),
    }
    lines = ["# Written by cerebelum.dev.kafka on every start; edit the code, not this file."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def format_storage(layout: KafkaLayout, cluster_id: str | None = None) -> None:
    """Give the log dir a cluster id (`cluster_id`, the one every node of a cluster shares, or
    a new one), once: meta.properties marks it formatted."""
    if (layout.data / "meta.properties").exists():
        return
    cluster_id = cluster_id or new_cluster_id()
    _java(
        layout,
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(layout.server_properties),
        *kafka_sasl.format_arguments(layout.home),
    )
    say(f"formatted Kafka storage (cluster id {cluster_id})")


def new_cluster_id() -> str:
    """A fresh random cluster id as `kafka-storage random-uuid` makes it (Uuid.randomUuid: 16
    random bytes in unpadded URL-safe base64, never starting with "-"), without a JVM start."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _java(layout: KafkaLayout, main_class: str, *args: str) -> str:
    command = [
        "java",
        "-cp",
        f"{layout.libs}/*",
        f"-Dlog4j2.configurationFile={layout.log4j_properties}",
        main_class,
        *args,
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise DevServiceError(
            f"{main_class} {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
        )
    return result.stdout


def is_running(layout: KafkaLayout) -> bool:
    """True if our broker process is alive and its client port answers."""
    pid = _our_pid(layout)
    return pid is not None and port_answers(HOST, layout.port)


def pid_of(layout: KafkaLayout) -> int | None:
    """The pid of the broker of `layout` if one is alive."""
    return _our_pid(layout)


def _our_pid(layout: KafkaLayout) -> int | None:
    """The pid of this root's broker: the pid file's if it names it, else found in /proc."""
    pids = _our_pids(layout)
    return pids[0] if pids else None


def _our_pids(layout: KafkaLayout) -> list[int]:
    # The pid file may be stale, wrong or missing (an interrupted start, a reused pid, a second
    # `up` that overwrote it): the command line, which names our server.properties, decides.
    found = processes_with("kafka.Kafka", str(layout.server_properties))
    pid = read_pid(layout.pid_file)
    if pid is not None and (pid in found or _is_broker(pid)):
        # The pid file's broker first; it counts even if its command line names the config by
        # another spelling of the path (a broker started before roots were made absolute).
        found = [pid, *(p for p in found if p != pid)]
    return found


def _is_broker(pid: int) -> bool:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return pid_alive(pid) and b"kafka.Kafka" in args


def start(layout: KafkaLayout) -> None:
    """Fetch, configure, format and launch the broker, then wait until it serves requests."""
    if is_running(layout):
        if _config_current(layout):
            say(f"Kafka already running on {layout.bootstrap} (pid {_our_pid(layout)})")
            _finish(layout)
            return
        say("Kafka runs with an older configuration: restarting it with the new one")
        stop(layout)
    starting = _our_pid(layout)
    if starting is not None:
        # Launched by an earlier `up` that was interrupted while it waited: wait in its place.
        layout.pid_file.write_text(f"{starting}\n")
        say(f"Kafka is starting on {layout.bootstrap} (pid {starting})", end="")
        started = time.monotonic()
        _wait_ready(layout, starting)
        say(f" ready in {time.monotonic() - started:.1f} s")
        _finish(layout)
        return
    if port_answers(HOST, layout.port):
        raise DevServiceError(
            f"port {layout.port} is taken by another process; stop it or pick another port"
        )
    fetch_jars(layout)
    write_config(layout)
    format_storage(layout)
    say(f"starting Kafka {layout.version} on {layout.bootstrap}", end="")
    started = time.monotonic()
    pid = launch(layout)
    _wait_ready(layout, pid)
    say(f" ready in {time.monotonic() - started:.1f} s")
    _finish(layout)


def launch(layout: KafkaLayout) -> int:
    """Run `kafka.Kafka` on the written config, detached in its own session; its pid.

    Nothing is waited for: the nodes of a cluster are all launched before any of them can
    answer (a broker waits for a controller quorum), then waited for with `wait_ready`."""
    command = [
        "java",
        f"-Xmx{layout.heap}",
        f"-Xms{layout.heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        "-cp",
        f"{layout.libs}/*",
        f"-Dlog4j2.configurationFile={layout.log4j_properties}",
        "kafka.Kafka",
        str(layout.server_properties),
    ]
    with layout.out_file.open("wb") as out:
        # A new session: Ctrl-C in the terminal that ran `dev up` must not reach the broker.
        process = subprocess.Popen(
            command,
            cwd=layout.home,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    layout.pid_file.write_text(f"{process.pid}\n")
    # Kept, so that a broker outliving its Popen (it is detached on purpose) is no
    # ResourceWarning "subprocess is still running" when the object is collected.
    _LAUNCHED.append(process)
    return process.pid


_LAUNCHED: list[subprocess.Popen[bytes]] = []


def wait_ready(layout: KafkaLayout, pid: int) -> None:
    """Wait until the broker `pid` of `layout` lists topics; DevServiceError if it dies or hangs."""
    _wait_ready(layout, pid)


def _config_current(layout: KafkaLayout) -> bool:
    """True if the running broker's server.properties is what this version writes."""
    try:
        return layout.server_properties.read_text() == _server_properties(layout)
    except OSError:
        return False


def _finish(layout: KafkaLayout) -> None:
    """What a running broker needs each `up`: its SCRAM users, the client settings file."""
    kafka_sasl.upsert_users(layout.bootstrap, layout.home)
    kafka_sasl.write_client_env(layout.root, layout.home, layout.sasl_port)


def _wait_ready(layout: KafkaLayout, pid: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            raise DevServiceError(
                f"Kafka exited during startup; see {layout.out_file}:\n{_tail(layout.out_file)}"
            )
        if port_answers(HOST, layout.port) and _lists_topics(layout.bootstrap):
            return
        say(".", end="")
        time.sleep(0.5)  # Start takes 2-4 s: a coarser poll would add to every cold `up`.
    raise DevServiceError(
        f"Kafka did not answer within {READY_TIMEOUT_S:.0f} s; see {layout.logs}/server.log"
    )


def _lists_topics(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient  # imported late: `dev status` need not load it

    async def probe() -> None:
        # 5 s per request: a broker that accepts TCP but cannot answer metadata is not ready yet.
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000)
        try:
            await admin.start()
            await admin.list_topics()
        finally:
            await admin.close()

    with _quiet("aiokafka"):
        try:
            asyncio.run(probe())
        except Exception:  # any failure just means "not ready yet"
            return False
    return True


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    # aiokafka logs each refused connection at ERROR; during a startup wait that is expected.
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def stop(layout: KafkaLayout) -> None:
    """SIGTERM the broker(s) of this root, wait for a clean shutdown, SIGKILL past the limit."""
    pids = _our_pids(layout)
    if not pids:
        say("Kafka is not running")
        layout.pid_file.unlink(missing_ok=True)
        return
    for pid in pids:  # more than one only if something outside `dev up` launched another
        _stop_one(pid)
    layout.pid_file.unlink(missing_ok=True)


def _stop_one(pid: int) -> None:
    say(f"stopping Kafka (pid {pid})", end="")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while pid_alive(pid) and time.monotonic() < deadline:
        say(".", end="")
        time.sleep(0.5)  # Short polls: a clean shutdown takes 1-5 s and we want to return promptly.
    if pid_alive(pid):
        say(f" no exit after {STOP_TIMEOUT_S:.0f} s, killing", end="")
        os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.1)
    say(" stopped")


def status(layout: KafkaLayout) -> dict[str, object]:
    """What a person or a script wants to know about the broker."""
    pid = _our_pid(layout)
    return {
        "running": pid is not None and port_answers(HOST, layout.port),
        "pid": pid,
        "bootstrap": layout.bootstrap,
        "version": layout.version,
        "jars_cached": layout.complete_marker.exists(),
        "formatted": (layout.data / "meta.properties").exists(),
        "log": str(layout.logs / "server.log"),
        # The SASL_SSL listener's client settings (the password stays in its file).
        "sasl_ssl": kafka_sasl.client_settings(layout.root, layout.home, layout.sasl_port),
    }


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
