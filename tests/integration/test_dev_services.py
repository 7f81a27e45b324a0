"""`cerebelum dev up` run twice at once starts one broker; status and down always find it.

Runs the dev services of a fresh root on ports free at run time (Kafka's client, controller and
SASL_SSL listeners on three consecutive ones, PostgreSQL on another), with the jar cache of this
checkout, so nothing of the test services, nor of a parallel run, is touched.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cerebelum.dev import postgres
from tests.conftest import ROOT
from tests.helpers import free_port

pytestmark = pytest.mark.integration


def free_ports() -> list[str]:
    """Kafka's client, controller and SASL_SSL listeners on p, p+1, p+2; PostgreSQL on p+3.

    Drawn when the test starts, below the ephemeral range (see `free_port`). Drawn at import,
    minutes earlier, from bind(0), PostgreSQL's port was once a live client connection's by then.
    """
    base = free_port(run=4)
    return [
        "--kafka-port", str(base), "--kafka-controller-port", str(base + 1),
        "--postgres-port", str(base + 3),
    ]  # fmt: skip


# A cold `up` (initdb, storage format, JVM start) takes 10-30 s on a busy 2-core box.
UP_TIMEOUT_S = 180


def brokers_of(root: Path) -> list[int]:
    """Pids of live kafka.Kafka processes started with this root's server.properties."""
    wanted = str(root.resolve() / ".dev" / "kafka" / "server.properties").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if b"kafka.Kafka" in args and wanted in args and state != "Z":
            found.append(int(entry.name))
    return found


def dev(root: Path, *args: str, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEREBELUM_")}
    return subprocess.Popen(
        [sys.executable, "-m", "cerebelum.cli.dev", *args, "--root", str(root)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def finish(proc: subprocess.Popen[bytes], timeout: float = UP_TIMEOUT_S) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(errors="replace")


@pytest.fixture
def fresh_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "root"
    root.mkdir()
    (root / ".cache").symlink_to(ROOT / ".cache")  # the jars, fetched once for the checkout
    try:
        yield root
    finally:
        finish(dev(root, "down"), timeout=120)
        for pid in brokers_of(root):  # whatever `down` could not find
            os.kill(pid, signal.SIGKILL)


def test_two_concurrent_ups_start_one_broker_that_status_and_down_find(fresh_root: Path) -> None:
    ports = free_ports()
    first = dev(fresh_root, "up", *ports)
    second = dev(fresh_root, "up", *ports)
    results = [finish(first), finish(second)]
    for code, out in results:
        assert code == 0, out
    # Before the fix: both launched a broker on one data directory, and the pid file named the
    # one that died, so `status` said "not running" and `down` left the survivor running.
    (pid,) = brokers_of(fresh_root)

    pid_file = fresh_root / ".dev" / "kafka" / "kafka.pid"
    for damage in ("999999\n", None):  # a wrong pid, then no pid file at all
        if damage is None:
            pid_file.unlink()
        else:
            pid_file.write_text(damage)
        code, out = finish(dev(fresh_root, "status"))
        assert code == 0, out
        assert json.loads(out)["kafka"]["pid"] == pid

    code, out = finish(dev(fresh_root, "down"), timeout=120)
    assert code == 0, out
    assert brokers_of(fresh_root) == []


def test_up_with_a_relative_root(fresh_root: Path) -> None:
    # Before the fix the broker was launched from .dev/kafka with a relative classpath:
    # "Could not find or load main class kafka.Kafka".
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEREBELUM_")}
    up = subprocess.run(
        [sys.executable, "-m", "cerebelum.cli.dev", "up", "--root", ".", *free_ports()],
        cwd=fresh_root, env=env, capture_output=True, timeout=UP_TIMEOUT_S,
    )  # fmt: skip
    assert up.returncode == 0, up.stdout.decode() + up.stderr.decode()
    assert len(brokers_of(fresh_root)) == 1
    down = subprocess.run(
        [sys.executable, "-m", "cerebelum.cli.dev", "down", "--root", "."],
        cwd=fresh_root, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    assert down.returncode == 0, down.stdout.decode()
    assert brokers_of(fresh_root) == []


def test_a_postgres_that_cannot_start_says_why(tmp_path: Path) -> None:
    # What CI once met: the port is no listener's (so `up`'s check that nothing answers there
    # passes) but a live client connection's local port, and the server cannot bind it. The error
    # used to end at "pg_ctl: could not start server / Examine the log output", and in CI the log
    # was gone with the machine; now the log's last lines come with it.
    layout = postgres.PostgresLayout(tmp_path / "root", port=free_port())
    with socket.create_server(("127.0.0.1", 0)) as server, socket.socket() as client:
        client.bind(("127.0.0.1", layout.port))
        client.connect(server.getsockname())
        with pytest.raises(postgres.DevServiceError) as refused:
            postgres.start(layout)
    assert "Address already in use" in str(refused.value), refused.value
    assert postgres.server_pid(layout) is None
