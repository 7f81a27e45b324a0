"""Local services for development and CI: a Kafka broker and a PostgreSQL server, no Docker.

`services.up()` starts both from files under the repo (`.cache/` for downloads, `.dev/` for state);
`kafka` and `postgres` hold one service each. This package is tooling: the engine never imports it.

The few helpers below are shared by both services.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path


class DevServiceError(RuntimeError):
    """A local service could not be fetched, started or stopped; the message says what to do."""


def say(message: str, end: str = "\n") -> None:
    """Print a progress line at once, even when stdout is a pipe (bootstrap.sh, CI logs)."""
    print(message, end=end, file=sys.stdout, flush=True)


def port_answers(host: str, port: int) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        # Loopback answers in microseconds; a second only matters for a wedged process.
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state == "Z":
        _reap(pid)
        return False
    return True


def processes_with(*arguments: str) -> list[int]:
    """Pids of live processes whose command line holds every one of `arguments` (each a whole
    argument), found in /proc: what a pid file cannot be trusted to say."""
    wanted = [a.encode() for a in arguments]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if all(w in args for w in wanted) and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


@contextlib.contextmanager
def exclusive(path: Path, waiting: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block; say `waiting` first
    if another process holds it. The kernel drops the lock when its holder exits, crash or not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(waiting)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_pid(path: Path) -> int | None:
    """The pid stored in a pid file, or None when the file is missing or garbled."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _reap(pid: int) -> None:
    # A service started by this very process turns zombie when it exits; collect it.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
