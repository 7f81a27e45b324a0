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
from aiokafka import AIOKafkaProducer
from playwright.async_api import async_playwright

from cerebelum.config import Settings
from cerebelum.core import events as ev
from cerebelum.core.commands import start_command
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
    pool = await connect_pool(settings.namespace_database_url, max_size=1)
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
                await write_batch(conn, rows, settings.names.mirrored_channel)
    finally:
        await pool.close()


async def dead_letter_of(http: httpx.AsyncClient, execution_id: str) -> None:
    """Until the mirror has a dead letter for `execution_id`."""
    async with asyncio.timeout(60):
        while not (await http.get("/dlq", params={"execution_id": execution_id})).json()[
            "dead_letters"
        ]:
            await asyncio.sleep(0.3)


async def until(page: object, predicate: str, arg: object = None, timeout: float = 30) -> None:
    """Polls `predicate` (a JS function) in the page until it is truthy.

    Not page.wait_for_function: that polls with eval() inside the page, which the dashboard's
    Content-Security-Policy refuses (it passes only when the first check, run through the
    DevTools protocol, already holds). page.evaluate calls the function over the protocol.
    """
    async with asyncio.timeout(timeout):
        while not await page.evaluate(predicate, arg):  # type: ignore[attr-defined]
            await asyncio.sleep(0.1)


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
    # The header names the namespace this API serves (before any token is given).
    await until(
        page, "(ns) => document.getElementById('namespace').textContent === ns",
        settings.namespace,
    )  # fmt: skip
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
        await until(page, "(first) => document.querySelector('#executions tbody td')"
                          "?.innerText !== first", ids[0])  # fmt: skip
    assert seen[:3] == [f"{workflow}-09999", f"{workflow}-09998", f"{workflow}-09997"]
    await page.screenshot(path=str(SHOTS / "executions.png"))

    # Start an execution that waits for an approval, watch it wait, approve it, see it complete.
    eid = f"dash-approve-{uuid.uuid4().hex[:8]}"
    started = await http.post("/executions", params={"wait": 60, "until": "waiting"},
                              json={"workflow": "approver", "execution_id": eid,
                                    "inputs": {"amount": 3}})  # fmt: skip
    assert started.json()["until"]["met"] is True, started.text
    # Two refused commands to show: a signal the workflow never waits for, and a start off its
    # home partition (the dead letter is that execution's fate: its page says so).
    bad = await http.post(f"/executions/{eid}/signals/nope", json={})
    assert bad.status_code == 202, bad.text
    refused = f"dash-refused-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        value, key = start_command(refused, "approver", {}), f"elsewhere-{refused}".encode()
        await producer.send_and_wait(settings.names.commands, value, key)
    finally:
        await producer.stop()
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
    await until(page, "() => document.querySelector('#state').innerText.includes('\"version\": 2')")
    await until(
        page, "() => document.querySelector('#changes').innerText.includes('version: 1 → 2')"
    )
    assert "added" in await page.inner_text("#changes")  # event 2 scheduled the first step
    await page.screenshot(path=str(SHOTS / "time-travel.png"), full_page=True)

    # Its refused signal, replayed from its page (refused again: the execution has ended).
    await dead_letter_of(http, eid)
    await page.reload()
    await page.wait_for_selector("#dead-letters .replay")
    assert "never waits for signal 'nope'" in await page.inner_text("#dead-letters")
    assert settings.names.worker_client_id_prefix in await page.inner_text(
        "#steps"
    )  # who ran each step
    await page.click("#dead-letters .replay")
    await until(page, "() => document.querySelector('#dead-letters')"
                      "?.innerText.includes('by tests-admin')")  # fmt: skip
    assert "replayed" in await page.inner_text("#status")
    # Run it again: a new execution with the same inputs, whose page links back.
    await page.click("#run-again")
    await page.wait_for_selector("#rerun-of")
    assert await page.inner_text("#rerun-of a") == eid
    assert "approver" in await page.inner_text("h2 + p")
    # The execution whose start was refused: its fate, not "not found".
    await dead_letter_of(http, refused)
    await page.goto(f"{api_url}/#/execution/{refused}")
    await page.wait_for_selector("#fate")
    assert "start refused" in await page.inner_text("#fate")
    assert "key must be its execution_id" in await page.inner_text("#dead-letters")
    await page.screenshot(path=str(SHOTS / "execution-start-refused.png"))

    # The partition grid: two workers share the 64 partitions; stop one, watch them move.
    await page.goto(f"{api_url}/#/cluster")
    owners = "Array.from(document.querySelectorAll('#partitions .cell'), c => c.dataset.owner)"
    await until(page, f"() => new Set({owners}.filter(Boolean)).size === 2", timeout=60)
    assert len(await page.locator("#partitions .cell").all()) == 64
    await page.screenshot(path=str(SHOTS / "partitions-two-workers.png"))
    first.send_signal(signal.SIGTERM)
    await until(
        page, f"() => {{ const o = {owners}; return o.every(Boolean) && new Set(o).size === 1; }}",
        timeout=60,
    )  # fmt: skip
    await page.screenshot(path=str(SHOTS / "partitions-after-a-worker-stopped.png"))
