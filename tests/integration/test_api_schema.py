"""Schemathesis against the running API's own OpenAPI document: generated requests (valid and
not) to every operation, with an admin token, must get no 5xx and only documented statuses in
the documented shape. The API runs as a process (`cerebelum api`) with the mirror behind it;
schemathesis runs as its own process (its CLI), so its Hypothesis stays out of this session.

Two runs: the fuzzing phase (each operation alone), then the stateful phase, which follows the
document's links (a start's execution_id into GET /executions/{id}, /events, /state; a listed
dead letter's id into GET /dlq/{id}) through chains of calls for a fixed time."""

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
# The stateful phase runs scenarios (chains of linked calls) until this many seconds are spent:
# ~30 scenarios, ~150 requests, every declared link followed.
STATEFUL_S = 10
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance"
# `wait` (POST /executions) and `timeout` (GET /executions/{id}?until=) hold a request open up
# to 60 s by design, and with no worker here nothing a start asks for ever happens: generated
# values made single requests last 16-42 s. Both runs send them short; every other parameter
# (and the id rule's pattern, which makes starts valid) stays generated.
CONFIG = """
[parameters]
"query.wait" = 0.2
"query.timeout" = 0.2
"""


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
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    common = [
        cli, "--config-file", str(config), "run", f"{url}/openapi.json",
        "-H", f"Authorization: Bearer {ADMIN_TOKEN}",
        "--checks", CHECKS,
        "--generation-deterministic",
        # A GET right after a start waits up to 5 s for the mirror, and may rightly do so.
        "--request-timeout", "65",
        # Generated bodies carry NUL bytes and huge JSON: the API must refuse them with 4xx.
        "--suppress-health-check", "all",
    ]  # fmt: skip
    runs = {
        "fuzzing": ["--phases", "examples,fuzzing", "--max-examples", str(EXAMPLES)],
        "stateful": ["--phases", "stateful", "--max-time", str(STATEFUL_S)],
    }
    # The two phases side by side (independent clients of one API): CI's time, not coverage.
    for name in runs:  # each its own working directory (its .hypothesis database)
        (tmp_path / name).mkdir()
    results = await asyncio.gather(*(
        asyncio.to_thread(
            subprocess.run, [*common, *phases], capture_output=True, text=True, timeout=600,
            cwd=tmp_path / name,
        ) for name, phases in runs.items()
    ))  # fmt: skip
    for name, result in zip(runs, results, strict=True):
        report = LOGS / f"schemathesis-{name}.txt"
        report.write_text(result.stdout + result.stderr)
        assert result.returncode == 0, (
            f"schemathesis ({name}) found problems (see {report}):\n" + result.stdout[-6000:]
        )
        if name == "stateful":  # the links were followed, not only declared
            assert "API Links:" in result.stdout and " 0 covered" not in result.stdout
