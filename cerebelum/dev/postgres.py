"""A PostgreSQL server of the repo's own, in .dev/postgres, on 127.0.0.1:15432.

The superuser `cerebelum` has trust auth on loopback; TLS is on, and the service roles
`cerebelum_mirror` and `cerebelum_api` log in over TLS with a password (postgres_auth.py).

PostgreSQL refuses to run as root, so when we are root the server runs as the system user
`cerebelum-pg` (created on first use) and every server command goes through `runuser`.

Starting is, in order:
    1. find the server binaries (apt-get install postgresql if there are none);
    2. initdb .dev/postgres/data unless it holds PG_VERSION;
    3. write cerebelum.conf (included from postgresql.conf) with our port and settings, and
       the TLS certificate and pg_hba.conf into the data dir;
    4. pg_ctl start, which waits until the server accepts connections;
    5. create the `cerebelum` database and the service roles if they are missing.
A server already running is reloaded when step 3 changed a file (an older version's .dev).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cerebelum.dev import (
    DevServiceError,
    pid_alive,
    port_answers,
    postgres_auth,
    read_pid,
    say,
)

HOST = "127.0.0.1"
# Off the default 5432 so a system PostgreSQL on the machine does not clash.
DEFAULT_PORT = 15432
DB_USER = "cerebelum"
DB_NAME = "cerebelum"
OS_USER = "cerebelum-pg"
# A cold start with crash recovery after a kill -9 takes a few seconds; 60 s covers a slow CI box.
START_TIMEOUT_S = 60
# Unix socket paths are capped at 108 bytes by the kernel; beyond this we move the socket to /tmp.
MAX_SOCKET_PATH = 100


@dataclass(frozen=True, slots=True)
class PostgresLayout:
    """Where one repo's PostgreSQL keeps its data and which port it listens on."""

    root: Path
    port: int = DEFAULT_PORT

    @property
    def home(self) -> Path:
        return self.root / ".dev" / "postgres"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        local = self.home / "run"
        if len(f"{local}/.s.PGSQL.{self.port}") <= MAX_SOCKET_PATH:
            return local
        digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:8]
        return Path(f"/tmp/cerebelum-pg-{digest}")

    @property
    def url(self) -> str:
        return f"postgresql://{DB_USER}@{HOST}:{self.port}/{DB_NAME}"


def _server_settings(layout: PostgresLayout) -> str:
    return f"""\
# Written by cerebelum.dev.postgres on every start; edit the code, not this file.
port = {layout.port}
listen_addresses = '{HOST}'
unix_socket_directories = '{layout.socket_dir}'
# Workers, the mirror and a parallel test run each hold a pool; the default 100 runs out.
max_connections = 200
# The default 128MB; a dev box has RAM to spare, and the rest is the OS page cache's.
shared_buffers = 256MB
# Durability stays as in production: fault tests kill the server and must see committed rows.
fsync = on
synchronous_commit = on
""" + postgres_auth.settings()


def find_bindir() -> Path:
    """The newest PostgreSQL server binaries on the machine, installing them if there are none."""
    found = _bindirs()
    if not found:
        _install_postgresql()
        found = _bindirs()
    if not found:
        raise DevServiceError(
            "no PostgreSQL server binaries (initdb, pg_ctl) found after installing"
        )
    return found[0]


def _bindirs() -> list[Path]:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_major, reverse=True)
    if shutil.which("pg_config"):
        result = subprocess.run(
            ["pg_config", "--bindir"], check=False, capture_output=True, text=True
        )
        candidates.insert(0, Path(result.stdout.strip()))
    # pg_config from libpq-dev alone points at /usr/bin, which has psql but no server.
    return [d for d in candidates if (d / "initdb").exists() and (d / "pg_ctl").exists()]


def _major(bindir: Path) -> int:
    """The major version: from Debian's /usr/lib/postgresql/<major>/bin, else from pg_ctl itself."""
    if bindir.parent.name.isdigit():
        return int(bindir.parent.name)
    result = subprocess.run(
        [str(bindir / "pg_ctl"), "--version"], check=False, capture_output=True, text=True
    )
    version = result.stdout.split()[-1] if result.returncode == 0 and result.stdout else "0"
    return int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0


def _install_postgresql() -> None:
    if os.geteuid() != 0:
        raise DevServiceError("PostgreSQL is not installed: run `sudo apt-get install postgresql`")
    say("installing PostgreSQL with apt-get (one time, ~1 min)...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        result = subprocess.run(command, env=env, check=False, capture_output=True, text=True)
        if result.returncode != 0:
            raise DevServiceError(
                f"{' '.join(command)} failed:\n{result.stdout[-2000:]}{result.stderr}"
            )


def _bindir_for(layout: PostgresLayout) -> Path:
    # An existing cluster only starts with the major version that created it.
    version_file = layout.data / "PG_VERSION"
    if not version_file.exists():
        return find_bindir()
    major = version_file.read_text().strip()
    matching = [d for d in _bindirs() if str(_major(d)) == major]
    if not matching:
        raise DevServiceError(
            f"{layout.data} is from PostgreSQL {major}, which is not installed; "
            "run `cerebelum dev reset` to start afresh"
        )
    return matching[0]


def _server_user(layout: PostgresLayout) -> str | None:
    """The OS user the server runs as: None means ourselves (we are not root)."""
    if os.geteuid() != 0:
        return None
    if layout.data.exists():
        owner = pwd.getpwuid(layout.data.stat().st_uid).pw_name
        if owner != "root":
            return owner
    _ensure_os_user(OS_USER)
    return OS_USER


def _ensure_os_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        say(f"creating system user {name} to run PostgreSQL (it refuses to run as root)")
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            check=True,
        )


def _as_server_user(user: str | None, command: list[str]) -> list[str]:
    return command if user is None else ["runuser", "-u", user, "--", *command]


def _prepare_dirs(layout: PostgresLayout, user: str | None) -> None:
    layout.home.mkdir(parents=True, exist_ok=True)
    layout.socket_dir.mkdir(parents=True, exist_ok=True)
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for path in (layout.home, layout.socket_dir):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    _make_traversable(layout.home, user)


def _make_traversable(path: Path, user: str) -> None:
    # The server user must reach .dev/postgres: grant search (not read) on ancestors that deny it.
    probe = subprocess.run(["runuser", "-u", user, "--", "test", "-w", str(path)], check=False)
    if probe.returncode == 0:
        return
    for ancestor in reversed(path.parents):
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            say(f"granting others search permission on {ancestor} so {user} can reach {path}")
            ancestor.chmod(mode | stat.S_IXOTH)


def _run(user: str | None, command: list[str], what: str) -> None:
    # A new session: Ctrl-C in the terminal that ran `dev up` must not reach the postmaster.
    result = subprocess.run(
        _as_server_user(user, command),
        check=False,
        capture_output=True,
        text=True,
        start_new_session=True,
    )
    if result.returncode != 0:
        raise DevServiceError(f"{what} failed:\n{result.stdout}{result.stderr}")


def init_cluster(layout: PostgresLayout, bindir: Path, user: str | None) -> None:
    """initdb the data dir once; PG_VERSION marks it done."""
    if (layout.data / "PG_VERSION").exists():
        return
    say(f"initialising PostgreSQL {_major(bindir)} in {layout.data}")
    _run(
        user,
        [
            str(bindir / "initdb"),
            "-D",
            str(layout.data),
            "-U",
            DB_USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        ],
        "initdb",
    )
    with (layout.data / "postgresql.conf").open("a") as conf:
        conf.write("\ninclude 'cerebelum.conf'\n")


def write_config(layout: PostgresLayout, user: str | None) -> bool:
    """Rewrite cerebelum.conf, the one place our settings live, owned by the server user, and
    put the TLS files and pg_hba.conf in place; True if anything changed."""
    conf = layout.data / "cerebelum.conf"
    text = _server_settings(layout)
    changed = not conf.exists() or conf.read_text() != text
    conf.write_text(text)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(conf, entry.pw_uid, entry.pw_gid)
    return postgres_auth.install_files(layout.root, layout.home, layout.data, user) or changed


def server_pid(layout: PostgresLayout) -> int | None:
    """The postmaster's pid if it is alive, from the first line of postmaster.pid."""
    pid = read_pid(layout.data / "postmaster.pid")
    return pid if pid is not None and pid_alive(pid) else None


def is_running(layout: PostgresLayout) -> bool:
    """True if our postmaster is alive and its port answers."""
    return server_pid(layout) is not None and port_answers(HOST, layout.port)


def start(layout: PostgresLayout) -> None:
    """Install if needed, initdb, configure and start the server, then create the database."""
    if is_running(layout):
        say(f"PostgreSQL already running on {HOST}:{layout.port} (pid {server_pid(layout)})")
        user = _server_user(layout)
        if write_config(layout, user):  # TLS and pg_hba.conf take effect on a reload
            say("  configuration changed: reloading")
            pg_ctl = str(_bindir_for(layout) / "pg_ctl")
            _run(user, [pg_ctl, "reload", "-D", str(layout.data), "-s"], "pg_ctl reload")
        asyncio.run(_ensure_database(layout))
        return
    if server_pid(layout) is None and port_answers(HOST, layout.port):
        raise DevServiceError(
            f"port {layout.port} is taken by another process; stop it or pick another port"
        )
    bindir = _bindir_for(layout)
    user = _server_user(layout)
    _prepare_dirs(layout, user)
    init_cluster(layout, bindir, user)
    write_config(layout, user)
    say(f"starting PostgreSQL {_major(bindir)} on {HOST}:{layout.port}")
    started = time.monotonic()
    try:
        _start_server(layout, bindir, user)
    except DevServiceError as error:
        raise DevServiceError(f"{error}{_log_tail(layout.log_file)}") from None
    asyncio.run(_ensure_database(layout))
    say(f"  ready in {time.monotonic() - started:.1f} s")


def _log_tail(log_file: Path, lines: int = 15) -> str:
    """The server log's last lines, for an error: why it refused to start (a port in use, ...)."""
    try:
        tail = log_file.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "".join(f"  | {line}\n" for line in tail)


def _start_server(layout: PostgresLayout, bindir: Path, user: str | None) -> None:
    _run(
        user,
        [
            str(bindir / "pg_ctl"),
            "start",
            "-D",
            str(layout.data),
            "-l",
            str(layout.log_file),
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-s",
        ],
        f"pg_ctl start (see {layout.log_file})",
    )


async def _ensure_database(layout: PostgresLayout) -> None:
    import asyncpg  # imported late: `dev status` need not load it

    admin_url = f"postgresql://{DB_USER}@{HOST}:{layout.port}/postgres"
    # pg_ctl -w has already waited for the server; 10 s covers its last startup steps.
    connection = await asyncpg.connect(admin_url, timeout=10)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB_NAME)
        if not exists:
            await connection.execute(f'CREATE DATABASE "{DB_NAME}"')
            say(f"  created database {DB_NAME}")
        await postgres_auth.ensure_roles(connection, layout.home)
    finally:
        await connection.close()


def stop(layout: PostgresLayout) -> None:
    """Stop the server in fast mode: roll back open transactions, then a clean shutdown."""
    if server_pid(layout) is None:
        say("PostgreSQL is not running")
        return
    bindir = _bindir_for(layout)
    user = _server_user(layout)
    say("stopping PostgreSQL")
    _run(
        user,
        [str(bindir / "pg_ctl"), "stop", "-D", str(layout.data), "-m", "fast", "-w", "-s"],
        "pg_ctl stop",
    )


def status(layout: PostgresLayout) -> dict[str, object]:
    """What a person or a script wants to know about the server."""
    return {
        "running": is_running(layout),
        "pid": server_pid(layout),
        "url": layout.url,
        "initialised": (layout.data / "PG_VERSION").exists(),
        "log": str(layout.log_file),
        # How the mirror and the API connect as their own roles (after `cerebelum db grant`).
        "service_roles": {
            role: {
                "CEREBELUM_DATABASE_URL": postgres_auth.role_url(
                    layout.root, layout.home, layout.port, role, DB_NAME
                ),
                "CEREBELUM_DATABASE_PASSWORD_FILE": str(
                    postgres_auth.password_file(layout.home, role)
                ),
            }
            for role in postgres_auth.SERVICE_ROLES
        },
    }
