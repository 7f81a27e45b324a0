"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a running
cluster: workers, the mirror and `cerebelum api` as processes. Screenshots go to
.dev/test-logs/dashboard/ (kept as the run's artifacts). Page functions are passed as
functions ("() => ..."): the dashboard's CSP forbids evaluating strings, Playwright's too."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from playwright.async_api import async_playwright

from cerebelum.config import Settings
from cerebelum.core import events as ev
from cerebelum.core.events import make_event
from cerebelum.db import connect_pool
from cerebelum.mirror.fold import decode_event, sort_and_dedupe
from cerebelum.mirror.store import write_batch
from tests.conftest import LOGS, Processes
from tests.helpers import ADMIN_TOKEN, API_HEADERS, api_settings, free_port, wait_ready

pytestmark = pytest.mark.integration

SHOTS = LOGS / "dashboard"
CHROMIUM = next(
    (p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "") if p and
     os.access(p, os.X_OK)), None,
)  # fmt: skip
if CHROMIUM is None:  # scripts/bootstrap.sh installs it; a machine without it says so loudly
    pytest.fail("chromium is not installed: run scripts/bootstrap.sh", pytrace=False)


@pytest.fixture
def api_url(processes: Processes, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    tokens = api_settings(tmp_path).tokens_file
    assert tokens is not None
    processes.spawn("api", "--port", str(port), CEREBELUM_API_TOKENS_FILE=tokens)
    yield f"http://127.0.0.1:{port}"


@pytest.fixture
async def http(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    await wait_ready(api_url)
    async with httpx.AsyncClient(base_url=api_url, headers=API_HEADERS, timeout=30) as client:
        yield client


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


async def seed(settings: Settings, workflow: str, n: int) -> None:
    """`n` finished executions of `workflow`, written as the mirror writes them."""
    pool = await connect_pool(settings.database_url, max_size=1)
    try:
        for start in range(0, n, 2_000):
            events = []
            for i in range(start, min(n, start + 2_000)):
                eid = f"{workflow}-{i:05d}"
                at = 1_700_000_000_000 + i
                events += [
                    make_event(eid, 1, ev.EXECUTION_STARTED, at, workflow=workflow,
                               workflow_version="v1", inputs={"i": i}),
                    make_event(eid, 2, ev.EXECUTION_COMPLETED, at + 1, output=i),
                ]  # fmt: skip
            rows = sort_and_dedupe(
                decode_event(orjson.dumps(e), 0, k) for k, e in enumerate(events)
            )
            async with pool.acquire() as conn:
                await write_batch(conn, rows)
    finally:
        await pool.close()


async def test_the_dashboard_in_a_browser(
    settings: Settings, processes: Processes, api_url: str, http: httpx.AsyncClient,
    browser: object,
) -> None:  # fmt: skip
    SHOTS.mkdir(parents=True, exist_ok=True)
    first = processes.worker()
    processes.worker()
    processes.mirror()
    workflow = f"dash-{uuid.uuid4().hex[:6]}"
    await seed(settings, workflow, 10_000)

    page = await browser.new_page(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    await page.goto(api_url + "/")
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("#token-form button")

    # Page through 10,000 executions: each page new, newest first.
    await page.goto(f"{api_url}/#/executions?workflow={workflow}")
    seen: list[str] = []
    for _ in range(4):
        await page.wait_for_selector("#executions tbody tr")
        ids = await page.locator("#executions tbody tr td:first-child").all_inner_texts()
        assert len(ids) == 50 and not set(ids) & set(seen)
        seen += ids
        await page.click("#next-page")
        await page.wait_for_function("(first) => document.querySelector('#executions tbody td')"
                                     "?.innerText !== first", arg=ids[0])  # fmt: skip
    assert seen[:3] == [f"{workflow}-09999", f"{workflow}-09998", f"{workflow}-09997"]
    await page.screenshot(path=str(SHOTS / "executions.png"))

    # Start an execution that waits for an approval, watch it wait, approve it, see it complete.
    eid = f"dash-approve-{uuid.uuid4().hex[:8]}"
    started = await http.post("/executions", params={"wait": 60, "until": "waiting"},
                              json={"workflow": "approver", "execution_id": eid,
                                    "inputs": {"amount": 3}})  # fmt: skip
    assert started.json()["until"]["met"] is True, started.text
    await page.goto(f"{api_url}/#/execution/{eid}")
    await page.wait_for_selector("#send-signal")
    assert await page.inner_text("#send-signal") == "Approve"
    assert "current" in (await page.get_attribute(".node.waiting", "class") or "")
    await page.screenshot(path=str(SHOTS / "execution-waiting.png"))
    await page.fill("#signal-payload", '{"approved": true, "by": "ana"}')
    await page.click("#send-signal")
    async with asyncio.timeout(60):
        while "completed" not in await page.inner_text("h2 + p"):
            await asyncio.sleep(0.5)
            await page.reload()
            await page.wait_for_selector("#steps")
    await page.wait_for_selector(".node.completed")
    await page.screenshot(path=str(SHOTS / "execution-completed.png"), full_page=True)

    # Time travel: the state after event 2, and what event 2 changed.
    await page.eval_on_selector(
        "#version", "(s) => { s.value = 2; s.dispatchEvent(new Event('input')); }"
    )
    await page.wait_for_function(
        "() => document.querySelector('#state').innerText.includes('\"version\": 2')"
    )
    await page.wait_for_function(
        "() => document.querySelector('#changes').innerText.includes('version: 1 → 2')"
    )
    assert "added" in await page.inner_text("#changes")  # event 2 scheduled the first step
    await page.screenshot(path=str(SHOTS / "time-travel.png"), full_page=True)

    # The partition grid: two workers share the 64 partitions; stop one, watch them move.
    await page.goto(f"{api_url}/#/cluster")
    owners = "Array.from(document.querySelectorAll('#partitions .cell'), c => c.dataset.owner)"
    await page.wait_for_function(
        f"() => new Set({owners}.filter(Boolean)).size === 2", timeout=60_000
    )
    assert len(await page.locator("#partitions .cell").all()) == 64
    await page.screenshot(path=str(SHOTS / "partitions-two-workers.png"))
    first.send_signal(signal.SIGTERM)
    await page.wait_for_function(
        f"() => {{ const o = {owners}; return o.every(Boolean) && new Set(o).size === 1; }}",
        timeout=60_000,
    )
    await page.screenshot(path=str(SHOTS / "partitions-after-a-worker-stopped.png"))
