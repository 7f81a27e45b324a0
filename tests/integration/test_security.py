"""Kafka over SASL_SSL and PostgreSQL over verified TLS with least-privilege roles, against the
dev services (`cerebelum dev up` gives the broker a SASL_SSL listener and PostgreSQL TLS and
the service roles; their client settings are read from `dev status`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from cerebelum.api import create_app
from cerebelum.client import Client
from cerebelum.config import Settings
from cerebelum.dev import services, tls
from cerebelum.errors import KafkaRefused
from cerebelum.security.kafka import KafkaSecurity, librdkafka_config
from cerebelum.security.secret import Secret
from tests.conftest import ROOT, Processes, process_env
from tests.helpers import API_HEADERS, api_settings

pytestmark = pytest.mark.integration

# A refusal is one round trip; anything near the client's bound means it hung instead.
REFUSAL_BOUND_S = 10.0


@pytest.fixture(scope="module")
def dev_env() -> dict[str, dict[str, str]]:
    """The dev services' client settings: "kafka" (SASL_SSL), and one per service role."""
    state = services.status(ROOT)
    kafka, postgres = state["kafka"], state["postgres"]
    assert isinstance(kafka, dict) and isinstance(postgres, dict)
    return {"kafka": kafka["sasl_ssl"], **postgres["service_roles"]}


@pytest.fixture(scope="module")
def sasl(settings: Settings, dev_env: dict[str, dict[str, str]]) -> Settings:
    """The suite's settings, but on the SASL_SSL listener with the dev user's credentials."""
    env = dev_env["kafka"]
    security = KafkaSecurity.from_env(env)
    assert security.protocol == "SASL_SSL" and security.sasl_mechanism == "SCRAM-SHA-512"
    return replace(settings, kafka_bootstrap=env["CEREBELUM_KAFKA"], kafka_security=security)


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cerebelum", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def role_settings(base: Settings, role_env: dict[str, str]) -> Settings:
    return replace(base, database_url=Settings.from_env(role_env).database_url)


async def test_clients_without_the_right_credentials_are_refused(sasl: Settings) -> None:
    plaintext = replace(sasl, kafka_security=KafkaSecurity())
    wrong = replace(sasl.kafka_security, password=Secret("not-the-password"))
    for settings, reason in (
        (plaintext, "closed the connection"),
        (replace(sasl, kafka_security=wrong), "authentication failed"),
    ):
        began = time.monotonic()
        with pytest.raises(KafkaRefused, match=reason) as refused:
            async with Client(settings, timeout=REFUSAL_BOUND_S):
                pass
        took = time.monotonic() - began
        print(f"refused in {took:.1f} s: {refused.value}")
        assert took < REFUSAL_BOUND_S

    # librdkafka (the worker's library) is refused too, and reports why to its error callback.
    errors: list[str] = []
    config = librdkafka_config(replace(sasl, kafka_security=wrong))
    admin = AdminClient({**config, "log_level": 0, "error_cb": lambda e: errors.append(str(e))})
    with pytest.raises(KafkaException):
        await asyncio.to_thread(admin.list_topics, timeout=5)
    admin.poll(1)  # the error callback runs inside poll()
    print("librdkafka:", errors[:1])
    assert any("authentication failed" in e.lower() for e in errors), errors


async def test_the_cli_names_a_refusal(
    sasl: Settings, dev_env: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    wrong = tmp_path / "password"
    wrong.write_text("not-the-password\n")
    env = process_env(
        sasl, **{**dev_env["kafka"], "CEREBELUM_KAFKA_SASL_PASSWORD_FILE": str(wrong)}
    )
    result = cli("start", "w3", "--id", "never-started", env=env)
    print(result.stderr)
    assert result.returncode != 0
    assert "refused the connection: authentication failed" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
async def grants(settings: Settings, database: None) -> None:
    """The service roles hold exactly their grants (as `cerebelum db grant` gives them)."""
    env = process_env(settings)
    for role, purpose in (("cerebelum_mirror", "mirror"), ("cerebelum_api", "api")):
        result = cli("db", "grant", "--role", role, "--for", purpose, env=env)
        assert result.returncode == 0, result.stderr


@pytest.fixture
async def api(
    sasl: Settings, dev_env: dict[str, dict[str, str]], grants: None, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The API as the read-only role over verify-full, its Kafka client over SASL_SSL."""
    app = create_app(role_settings(sasl, dev_env["cerebelum_api"]), api_settings(tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=API_HEADERS
        ) as http:
            yield http


async def test_end_to_end_over_sasl_ssl_with_least_privilege_roles(
    settings: Settings,
    sasl: Settings,
    dev_env: dict[str, dict[str, str]],
    topics: None,
    api: httpx.AsyncClient,
    request: pytest.FixtureRequest,
    unique,
) -> None:
    since_ms = int(time.time() * 1000)
    kafka_env = dev_env["kafka"]
    apply = cli("topics", "apply", env=process_env(sasl, **kafka_env))
    assert apply.returncode == 0, apply.stderr
    procs = Processes(sasl, request.node.name)
    try:
        procs.worker(**kafka_env)
        # The mirror as its own role, over verify-full; --no-migrate is not needed: with the
        # schema up to date it only reads schema_migrations.
        procs.spawn("mirror", **kafka_env, **dev_env["cerebelum_mirror"])

        by_client = unique("sec-client")
        async with Client(sasl) as client:
            await client.listen()
            await client.start("w3", {"n": 1}, by_client)
            assert (await client.wait(by_client, timeout=60)).status == "completed"

        by_cli = unique("sec-cli")
        started = cli(
            "start", "w3", "--id", by_cli, "--input", '{"n": 2}', "--wait", "--timeout", "60",
            env=process_env(sasl, **kafka_env), timeout=90,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr

        by_api = unique("sec-api")
        answer = await api.post("/executions", json={"workflow": "w3", "inputs": {"n": 3},
                                                      "execution_id": by_api})  # fmt: skip
        assert answer.status_code in (200, 201, 202), answer.text

        # Mirrored by the mirror's role; read back through the API's role.
        deadline = time.monotonic() + 60
        for eid in (by_client, by_cli, by_api):
            while True:
                shown = await api.get(f"/executions/{eid}")
                if shown.status_code == 200 and shown.json().get("status") == "completed":
                    break
                assert time.monotonic() < deadline, (eid, shown.text)
                await asyncio.sleep(0.5)

        verified = cli(
            "verify", "--since-ms", str(since_ms), "--no-db", "--quiet",
            env=process_env(sasl, **kafka_env), timeout=120,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        procs.stop_all()

    # The API's role reads but cannot write.
    conn = await asyncpg.connect(
        role_settings(sasl, dev_env["cerebelum_api"]).namespace_database_url
    )
    try:
        assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE executions SET status = 'failed' WHERE execution_id = $1",
                               by_api)  # fmt: skip
    finally:
        await conn.close()


async def test_a_database_certificate_from_another_ca_is_refused(
    settings: Settings, dev_env: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    tls.ensure_ca(tmp_path)  # a CA the server's certificate does not come from
    role = dict(dev_env["cerebelum_api"])
    role["CEREBELUM_DATABASE_URL"] = role["CEREBELUM_DATABASE_URL"].replace(
        str(tls.ca_file(ROOT)), str(tls.ca_file(tmp_path))
    )
    result = cli("db", "status", env=process_env(settings, **role))
    print(result.stderr)
    assert result.returncode == 1
    assert "certificate verify failed" in result.stderr
    assert "Traceback" not in result.stderr
