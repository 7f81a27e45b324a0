"""The dev broker's SASL_SSL listener: its certificate, its users, and the client settings.

The listener is always on, on the client port + 2 (19094 by default), beside the PLAINTEXT one
the rest of the test suite uses; the controller listener stays PLAINTEXT on loopback. One user,
`cerebelum`, with one generated password, for all three mechanisms it offers:
    SCRAM-SHA-256, SCRAM-SHA-512  credentials stored in the cluster metadata: added at format
                                  time (`--add-scram`) and upserted through the admin API at
                                  every start, so a data dir formatted by an older version
                                  gets them too;
    PLAIN                         from the listener's JAAS config.
The broker's TLS material is PEM (`ssl.keystore.type=PEM`: key and certificate chain in one
file), signed by the dev CA (cerebelum.dev.tls). What a client needs is written to
.dev/kafka/client.env (CEREBELUM_KAFKA_* lines; the password stays in its own 0600 file).
"""

from __future__ import annotations

import time
from pathlib import Path

from cerebelum.dev import DevServiceError, tls

USER = "cerebelum"
# Mechanisms the listener offers; SCRAM-SHA-512 is what the client file names.
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
CLIENT_MECHANISM = "SCRAM-SHA-512"
# Kafka's minimum and kafka-storage's default: a dev password needs no more rounds.
SCRAM_ITERATIONS = 4096
# The admin upsert is one metadata write; 30 s covers a broker still electing itself.
UPSERT_TIMEOUT_S = 30.0


def tls_dir(home: Path) -> Path:
    return home / "tls"


def password_file(home: Path) -> Path:
    return home / "client-password"


def client_env_file(home: Path) -> Path:
    return home / "client.env"


def prepare(root: Path, home: Path) -> tuple[str, Path]:
    """Make the broker's certificate and keystore and the user's password if missing; return
    the password and the keystore path."""
    cert = tls.ensure_server_cert(root, tls_dir(home), "broker")
    keystore = tls_dir(home) / "keystore.pem"
    content = cert.key.read_bytes() + cert.cert.read_bytes()
    if not keystore.exists() or keystore.read_bytes() != content:
        keystore.write_bytes(content)
        keystore.chmod(0o600)
    return tls.ensure_password(password_file(home)), keystore


def listener_properties(root: Path, home: Path, port: int) -> dict[str, str]:
    """server.properties entries of the SASL_SSL listener (listeners and advertised.listeners
    are the caller's, with `SASL_SSL://127.0.0.1:port` added)."""
    password, keystore = prepare(root, home)
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule required"
    plain += f' user_{USER}="{password}";'
    return {
        "sasl.enabled.mechanisms": ",".join(MECHANISMS),
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": scram,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
        "listener.name.sasl_ssl.plain.sasl.jaas.config": plain,
        "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
        "listener.name.sasl_ssl.ssl.keystore.location": str(keystore),
        "listener.name.sasl_ssl.ssl.truststore.type": "PEM",
        "listener.name.sasl_ssl.ssl.truststore.location": str(tls.ca_file(root)),
        # Clients authenticate with SASL; a client certificate is not asked for.
        "listener.name.sasl_ssl.ssl.client.auth": "none",
    }


def format_arguments(home: Path) -> list[str]:
    """`kafka-storage format` arguments that add the SCRAM users to a new data dir."""
    password = tls.ensure_password(password_file(home))
    args: list[str] = []
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        args += ["--add-scram", f"{mechanism}=[name={USER},password={password}]"]
    return args


def upsert_users(bootstrap: str, home: Path) -> None:
    """Give `cerebelum` its SCRAM credentials through the PLAINTEXT listener (idempotent)."""
    # Imported late: `dev status` need not load it.
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.admin._scram import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialAlteration,
        UserScramCredentialUpsertion,
    )

    password = tls.ensure_password(password_file(home)).encode()
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})  # no purge notes
    deadline = time.monotonic() + UPSERT_TIMEOUT_S
    # One request per mechanism: the broker refuses two alterations of a user in one.
    for mechanism in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512):
        upsert: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(
                USER, ScramCredentialInfo(mechanism, SCRAM_ITERATIONS), password
            )
        ]
        while True:  # a broker that has just started may not take it at once: retry
            left = max(deadline - time.monotonic(), 1.0)
            (future,) = admin.alter_user_scram_credentials(upsert, request_timeout=left).values()
            try:
                future.result(timeout=left)
                break
            except Exception as exc:  # noqa: BLE001 - any failure: retry, then say which step
                if time.monotonic() >= deadline:
                    raise DevServiceError(
                        f"could not add the SCRAM users to Kafka within "
                        f"{UPSERT_TIMEOUT_S:.0f} s: {exc}"
                    ) from exc
                time.sleep(0.5)  # as the readiness wait polls: a start takes seconds


def client_settings(root: Path, home: Path, port: int) -> dict[str, str]:
    """The CEREBELUM_KAFKA* settings of a client of the SASL_SSL listener (no secret inside:
    the password is named by its file)."""
    return {
        "CEREBELUM_KAFKA": f"127.0.0.1:{port}",
        "CEREBELUM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CEREBELUM_KAFKA_SASL_MECHANISM": CLIENT_MECHANISM,
        "CEREBELUM_KAFKA_SASL_USERNAME": USER,
        "CEREBELUM_KAFKA_SASL_PASSWORD_FILE": str(password_file(home)),
        "CEREBELUM_KAFKA_SSL_CA_FILE": str(tls.ca_file(root)),
    }


def write_client_env(root: Path, home: Path, port: int) -> Path:
    path = client_env_file(home)
    lines = ["# The dev broker's SASL_SSL listener: `set -a; . this-file; set +a`"]
    lines += [f"{k}={v}" for k, v in client_settings(root, home, port).items()]
    path.write_text("\n".join(lines) + "\n")
    return path
