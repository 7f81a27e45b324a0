"""Schemathesis against the running API's own OpenAPI document: generated requests (valid and
not) to every operation, with an admin token, must get no 5xx and only documented statuses in
the documented shape. The API runs as a process (`cerebelum api`) with the mirror behind it;
schemathesis runs as its own process (its CLI), so its Hypothesis stays out of this session."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LOGS, Processes
from tests.helpers import ADMIN_TOKEN, api_settings, free_port, wait_ready

pytestmark = pytest.mark.integration

# Generated cases per operation (the fuzzing phase: ~110 requests in all, ~50 s): small enough
# for CI. By hand, all phases and more cases: the same command with `--phases
# examples,coverage,fuzzing -n 50` (the coverage phase alone found nothing more, 499 cases).
EXAMPLES = 8
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance"


async def test_no_5xx_and_only_documented_statuses(processes: Processes, tmp_path: Path) -> None:
    port = free_port()
    tokens = api_settings(tmp_path).tokens_file
    assert tokens is not None
    processes.mirror()
    processes.spawn("api", "--port", str(port), CEREBELUM_API_TOKENS_FILE=tokens)
    url = f"http://127.0.0.1:{port}"
    await wait_ready(url)
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli is not None, "schemathesis is in the test extra"
    LOGS.mkdir(parents=True, exist_ok=True)
    report = LOGS / "schemathesis.txt"
    command = [
        cli, "run", f"{url}/openapi.json",
        "-H", f"Authorization: Bearer {ADMIN_TOKEN}",
        "--checks", CHECKS,
        "--max-examples", str(EXAMPLES),
        "--phases", "examples,fuzzing",
        "--generation-deterministic",
        # GET /executions/{id}?until=...&timeout=60 may rightly hold a request for 60 s.
        "--request-timeout", "65",
        # Generated bodies carry NUL bytes and huge JSON: the API must refuse them with 4xx.
        "--suppress-health-check", "all",
    ]  # fmt: skip
    result = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    report.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, (
        f"schemathesis found problems (see {report}):\n" + (result.stdout[-6000:])
    )
