"""A wheel works like a checkout: built, installed in a fresh virtualenv, run from elsewhere,
`cerebelum db migrate` and `cerebelum topics apply` find the schema and the topic declarations
shipped inside the package."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from cerebelum.config import Settings
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

# Building, installing and running: ~25 CPU-seconds with pip's cache warm (more wall time on a
# busy box), longer on the first run, which downloads the dependencies.
STEP_TIMEOUT_S = 300


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, timeout=STEP_TIMEOUT_S, check=False
    )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{output}"
    return output


@pytest.fixture
async def empty_database(settings: Settings) -> AsyncIterator[str]:
    """The URL of a new, empty database on the test server; dropped after the test."""
    name = f"cerebelum_wheel_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(settings.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(settings.database_url)._replace(path=f"/{name}"))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_wheel_installed_in_a_fresh_venv_migrates_and_applies_topics(
    settings: Settings, topics: None, empty_database: str, tmp_path: Path
) -> None:
    # Nothing of the checkout may leak in: no PYTHONPATH, and run from a folder outside it.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    pip = [sys.executable, "-m", "pip"]

    # Built from a copy of what the Dockerfile copies: no build/ left in the checkout, and
    # nothing outside those files can be what makes the wheel work.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "cerebelum", source / "cerebelum", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for folder in ("sql", "topics"):
        shutil.copytree(ROOT / folder, source / folder)
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / file, source / file)
    run([*pip, "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"), str(source)],
        outside, env)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("cerebelum-*.whl")

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], outside, env)
    python = str(venv / "bin" / "python")
    # The outer installer fills the new venv: no ensurepip, its cache serves the deps, and
    # no byte-compiling of ~20 packages this test imports a few modules of. uv (which
    # scripts/bootstrap.sh installs) when there is one: a few seconds instead of ~20.
    if importlib.util.find_spec("uv") is not None:
        run([sys.executable, "-m", "uv", "pip", "install", "--quiet", "--python", python,
             str(wheel)], outside, env)  # fmt: skip
    else:
        run([*pip, "--python", python, "install", "--quiet", "--no-compile", str(wheel)],
            outside, env)  # fmt: skip
    where = run([python, "-c", "import cerebelum; print(cerebelum.__file__)"], outside, env)
    assert str(venv) in where and str(ROOT) not in where

    cerebelum = str(venv / "bin" / "cerebelum")
    env.update(
        CEREBELUM_KAFKA=settings.kafka_bootstrap,
        CEREBELUM_DATABASE_URL=empty_database,
        CEREBELUM_NAMESPACE=settings.namespace,  # the module's: its topics, a schema of its own
    )
    # Before the fix: "nothing to apply" (sql/ was looked for beside site-packages) and exit 0.
    migrated = run([cerebelum, "db", "migrate"], outside, env)
    assert "applied  001_events.sql" in migrated
    # Before the fix: FileNotFoundError for topics/topics.json, with a traceback.
    applied = run([cerebelum, "topics", "apply"], outside, env)
    for topic in (
        settings.names.commands,
        settings.names.events,
        settings.names.state,
        settings.names.dlq,
    ):
        assert topic in applied

    conn = await asyncpg.connect(empty_database)
    try:
        tables = {
            r["tablename"]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1", settings.names.schema
            )
        }
    finally:
        await conn.close()
    assert {"events", "executions", "mirror_rejects", "schema_migrations"} <= tables

    # Every migration and the declarations are in the wheel, inside the package.
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("cerebelum/_data/")}
    assert "cerebelum/_data/topics/topics.json" in shipped
    assert {Path(n).name for n in shipped if n.endswith(".sql")} == {
        p.name for p in (ROOT / "sql").glob("*.sql")
    }
