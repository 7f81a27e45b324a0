"""The dev PostgreSQL's TLS and its password-authenticated roles.

    TLS       on, with a certificate for 127.0.0.1/localhost signed by the dev CA
              (cerebelum.dev.tls), copied into the data dir (the server wants its key there,
              owned by it, mode 0600).
    pg_hba    the superuser `cerebelum` keeps trust on loopback (the suite and `db migrate`);
              the service roles below must come over TLS and give their password
              (scram-sha-256); without TLS they are rejected.
    roles     `cerebelum_mirror` and `cerebelum_api`: LOGIN, not superusers, no privileges until
              `cerebelum db grant` gives them what the mirror and the API need. Passwords are
              generated once into .dev/postgres/<role>.password (0600).
Development only: a real deployment's DBA makes the roles and the certificates.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from cerebelum.dev import tls

if TYPE_CHECKING:
    import asyncpg

SERVICE_ROLES = ("cerebelum_mirror", "cerebelum_api")
CERT_NAME = "server.pem"
KEY_NAME = "server.key"


def settings() -> str:
    """cerebelum.conf lines for TLS (paths relative to the data dir)."""
    return f"ssl = on\nssl_cert_file = '{CERT_NAME}'\nssl_key_file = '{KEY_NAME}'\n"


def hba() -> str:
    roles = ",".join(SERVICE_ROLES)
    return f"""\
# Written by cerebelum.dev.postgres on every start; edit the code, not this file.
# TYPE    DATABASE     USER       ADDRESS        METHOD
local     all          all                       trust
hostnossl all          {roles}    127.0.0.1/32   reject
hostssl   all          {roles}    127.0.0.1/32   scram-sha-256
host      all          all        127.0.0.1/32   trust
host      all          all        ::1/128        trust
local     replication  all                       trust
host      replication  all        127.0.0.1/32   trust
"""


def install_files(root: Path, home: Path, data: Path, user: str | None) -> bool:
    """Put the server certificate and pg_hba.conf in the data dir; True if anything changed
    (a running server must then reload)."""
    cert = tls.ensure_server_cert(root, home / "tls", "server")
    changed = False
    for source, name in ((cert.cert, CERT_NAME), (cert.key, KEY_NAME)):
        changed |= _install(source.read_bytes(), data / name, user)
    changed |= _install(hba().encode(), data / "pg_hba.conf", user)
    return changed


def _install(content: bytes, target: Path, user: str | None) -> bool:
    if target.exists() and target.read_bytes() == content:
        return False
    target.unlink(missing_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    if user is not None:
        entry = pwd.getpwnam(user)
        shutil.chown(target, entry.pw_uid, entry.pw_gid)
    return True


def password_file(home: Path, role: str) -> Path:
    return home / f"{role}.password"


async def ensure_roles(connection: asyncpg.Connection, home: Path) -> None:
    """Create the service roles if missing and (re)set their passwords; `connection` is an
    asyncpg connection of the superuser."""
    for role in SERVICE_ROLES:
        password = tls.ensure_password(password_file(home, role))
        exists = await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
        verb = "ALTER" if exists else "CREATE"
        # Identifiers and the password are ours (generated, URL-safe): no quoting issue.
        await connection.execute(
            f"{verb} ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
            f"PASSWORD '{password}'"
        )


def role_url(root: Path, home: Path, port: int, role: str, database: str) -> str:
    """The URL a service role connects with: TLS verified against the dev CA. The password is
    not in it: CEREBELUM_DATABASE_PASSWORD_FILE names its file."""
    ca = quote(str(tls.ca_file(root)))
    return (
        f"postgresql://{role}@127.0.0.1:{port}/{database}" f"?sslmode=verify-full&sslrootcert={ca}"
    )
