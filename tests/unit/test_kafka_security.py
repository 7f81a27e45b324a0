"""Kafka TLS/SASL settings: parsed and checked at the edge, secrets hidden, and the only way any
Kafka client of Cerebelum gets its address."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path

import pytest

import cerebelum
from cerebelum.config import Settings
from cerebelum.dev import tls
from cerebelum.errors import ConfigurationError
from cerebelum.security.kafka import KafkaSecurity, aiokafka_kwargs, librdkafka_config
from cerebelum.worker.kafka_config import consumer_config, producer_config, restore_config

PACKAGE = Path(cerebelum.__file__).parent
SASL = {
    "CEREBELUM_KAFKA": "broker.example:9094",
    "CEREBELUM_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
    "CEREBELUM_KAFKA_SASL_MECHANISM": "scram-sha-512",
    "CEREBELUM_KAFKA_SASL_USERNAME": "svc",
    "CEREBELUM_KAFKA_SASL_PASSWORD": "hunter2-secret",
}


@pytest.fixture
def ca(tmp_path: Path) -> str:
    tls.ensure_ca(tmp_path)
    return str(tls.ca_file(tmp_path))


def test_plaintext_by_default() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_security == KafkaSecurity()
    assert librdkafka_config(settings) == {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": "plaintext",
    }
    assert aiokafka_kwargs(settings) == {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_for_both_libraries(ca: str) -> None:
    settings = Settings.from_env({**SASL, "CEREBELUM_KAFKA_SSL_CA_FILE": ca})
    config = librdkafka_config(settings)
    assert config["security.protocol"] == "sasl_ssl"
    assert (config["sasl.mechanism"], config["sasl.username"]) == ("SCRAM-SHA-512", "svc")
    assert config["sasl.password"] == "hunter2-secret"
    assert config["ssl.ca.location"] == ca
    kwargs = aiokafka_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_password"] == "hunter2-secret"
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    # Every librdkafka client of the worker carries them.
    for built in (
        consumer_config(settings, "w1"),
        producer_config(settings, "w1"),
        restore_config(settings, "w1"),
    ):
        assert built["sasl.username"] == "svc" and built["ssl.ca.location"] == ca


def test_the_password_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    env = {k: v for k, v in SASL.items() if k != "CEREBELUM_KAFKA_SASL_PASSWORD"}
    settings = Settings.from_env({**env, "CEREBELUM_KAFKA_SASL_PASSWORD_FILE": str(secret)})
    assert librdkafka_config(settings)["sasl.password"] == "from-a-file"
    with pytest.raises(ConfigurationError, match="both set"):
        Settings.from_env({**SASL, "CEREBELUM_KAFKA_SASL_PASSWORD_FILE": str(secret)})
    with pytest.raises(ConfigurationError, match="cannot read"):
        Settings.from_env({**env, "CEREBELUM_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "no")})


def test_secrets_never_show() -> None:
    settings = Settings.from_env(
        {**SASL, "CEREBELUM_DATABASE_URL": "postgresql://app:pg-secret@db:5432/c"}
    )
    for shown in (repr(settings), str(settings), repr(settings.kafka_security)):
        assert "hunter2-secret" not in shown and "pg-secret" not in shown
        assert "**********" in shown


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CEREBELUM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of"),
        ({"CEREBELUM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs CEREBELUM_KAFKA_SASL_MECHANISM"),
        ({**SASL, "CEREBELUM_KAFKA_SASL_MECHANISM": "GSSAPI"}, "not 'GSSAPI'"),
        ({**SASL, "CEREBELUM_KAFKA_SASL_MECHANISM": "OAUTHBEARER"}, "not supported yet"),
        ({**SASL, "CEREBELUM_KAFKA_SASL_USERNAME": ""}, "needs CEREBELUM_KAFKA_SASL_USERNAME"),
        ({**SASL, "CEREBELUM_KAFKA_SASL_PASSWORD": ""}, "CEREBELUM_KAFKA_SASL_PASSWORD"),
        ({"CEREBELUM_KAFKA_SASL_MECHANISM": "PLAIN"}, "does not use SASL"),
        ({"CEREBELUM_KAFKA_SSL_CA_FILE": "/etc/hostname"}, "does not use TLS"),
        ({**SASL, "CEREBELUM_KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem"}, "not a readable file"),
        ({**SASL, "CEREBELUM_KAFKA_SSL_CA_FILE": "/etc/hostname"}, "cannot use the Kafka TLS"),
        ({**SASL, "CEREBELUM_KAFKA_SSL_CERT_FILE": "/etc/hostname"}, "go together"),
    ],
)
def test_bad_combinations_fail_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env)


def test_a_client_certificate(tmp_path: Path, ca: str) -> None:
    cert = tls.ensure_server_cert(tmp_path, tmp_path / "client", "client")
    env = {
        "CEREBELUM_KAFKA_SECURITY_PROTOCOL": "SSL",
        "CEREBELUM_KAFKA_SSL_CA_FILE": ca,
        "CEREBELUM_KAFKA_SSL_CERT_FILE": str(cert.cert),
        "CEREBELUM_KAFKA_SSL_KEY_FILE": str(cert.key),
    }
    config = librdkafka_config(Settings.from_env(env))
    assert config["ssl.certificate.location"] == str(cert.cert)
    assert config["ssl.key.location"] == str(cert.key)
    assert "sasl.mechanism" not in config
    other = tls.ensure_server_cert(tmp_path / "other", tmp_path / "other", "x")
    with pytest.raises(ConfigurationError, match="cannot use the Kafka TLS"):  # key mismatch
        Settings.from_env({**env, "CEREBELUM_KAFKA_SSL_KEY_FILE": str(other.key)})


# Where a Kafka client may be given its address: the one module that adds TLS and SASL to it,
# and the dev tooling (its readiness probe and user set-up use the PLAINTEXT listener).
ALLOWED = {"security/kafka.py"}
ALLOWED_DIRS = {"dev"}


def test_no_kafka_client_bypasses_the_security_settings() -> None:
    """A Kafka client cannot be made without an address: `bootstrap.servers` (librdkafka) or
    `bootstrap_servers` (aiokafka). Outside the security module, neither may appear, so every
    client's address (and with it TLS and SASL) comes from librdkafka_config/aiokafka_kwargs."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if str(relative) in ALLOWED or relative.parts[0] in ALLOWED_DIRS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value == "bootstrap.servers":
                offenders.append(f"{relative}:{node.lineno} 'bootstrap.servers'")
            if isinstance(node, ast.keyword) and node.arg == "bootstrap_servers":
                offenders.append(f"{relative}:{node.lineno} bootstrap_servers=")
            if isinstance(node, ast.Name) and node.id == "create_conn":
                if str(relative) != "security/probe.py":
                    offenders.append(f"{relative}:{node.lineno} create_conn")
    assert offenders == []
