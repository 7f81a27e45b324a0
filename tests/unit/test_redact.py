"""Passwords never leave the process in an address that is logged or printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from cerebelum.config import Settings
from cerebelum.errors import ConfigurationError, KafkaUnavailable
from cerebelum.security.redact import redact
from cerebelum.security.secret import Secret


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("postgresql://app:s3cr%40t@db:5432/c", "postgresql://app:**********@db:5432/c"),
        ("postgresql://app@db/c?sslmode=verify-full", "postgresql://app@db/c?sslmode=verify-full"),
        (
            "postgresql://db/c?user=app&password=s3cret",
            "postgresql://db/c?user=app&password=**********",
        ),
        ("host=db user=app password=s3cret", "host=db user=app password=**********"),
        ("host=db password='s3 cret' dbname=c", "host=db password=********** dbname=c"),
        ("b1:9092,b2:9092", "b1:9092,b2:9092"),
        ("sasl_ssl://u:s3cret@b1:9094", "sasl_ssl://u:**********@b1:9094"),
        ("postgresql://app:s3cret@db:badport/c", "postgresql://app:**********@db:badport/c"),
    ],
)
def test_redact(address: str, shown: str) -> None:
    assert redact(address) == shown


def test_errors_and_reprs_redact() -> None:
    assert "s3cret" not in str(KafkaUnavailable("sasl_ssl://u:s3cret@b:9094", 1, "answer"))
    secret = Secret("s3cret")
    assert "s3cret" not in f"{secret} {secret!r} {[secret]}"
    assert secret.reveal() == "s3cret"


def test_database_password_file(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("p@ss/word\n")
    env = {
        "CEREBELUM_DATABASE_URL": "postgresql://app@db:5432/c?sslmode=require",
        "CEREBELUM_DATABASE_PASSWORD_FILE": str(password),
    }
    settings = Settings.from_env(env)
    assert settings.database_url == "postgresql://app:p%40ss%2Fword@db:5432/c?sslmode=require"
    assert "p%40ss" not in repr(settings)
    with pytest.raises(ConfigurationError, match="set one"):
        Settings.from_env({**env, "CEREBELUM_DATABASE_URL": "postgresql://app:x@db/c"})
    with pytest.raises(ConfigurationError, match="needs a user"):
        Settings.from_env({**env, "CEREBELUM_DATABASE_URL": "postgresql://db/c"})


def test_database_tls_files_are_checked() -> None:
    url = "postgresql://app@db/c?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"
    with pytest.raises(ConfigurationError, match="sslrootcert=/nonexistent/ca.pem"):
        Settings.from_env({"CEREBELUM_DATABASE_URL": url})
    with pytest.raises(ConfigurationError, match="postgresql://"):
        Settings.from_env({"CEREBELUM_DATABASE_URL": "mysql://app:s3cret@db/c"})
