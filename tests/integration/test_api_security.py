"""The API's entrance against the real broker and database: tokens and scopes, cross-site
requests, the Host allowlist, security headers and body limits (cerebelum.api.guard)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cerebelum.api import create_app
from cerebelum.client import partition_for
from cerebelum.config import ApiSettings, Settings
from cerebelum.constants import PARTITIONS
from cerebelum.core import events as ev
from cerebelum.core.events import make_event
from cerebelum.db import connect_pool
from cerebelum.mirror.fold import decode_event, sort_and_dedupe
from cerebelum.mirror.store import write_batch
from tests.helpers import JSON, api_settings

pytestmark = pytest.mark.integration

AT = 1_700_000_000_000
SCOPES = ("read", "start", "signal", "cancel", "admin")
TOKENS = {scope: f"cbl_security-{scope}" for scope in SCOPES}


def bearer(scope: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKENS[scope]}"}


@asynccontextmanager
async def serve(settings: Settings, api: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, api)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            yield http


@pytest.fixture(scope="module")
async def api(
    settings: Settings, topics: None, database: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    tokens = {token: [scope] for scope, token in TOKENS.items()}
    async with serve(settings, api_settings(tmp_path_factory.mktemp("sec"), tokens)) as http:
        yield http


@pytest.fixture(scope="module")
async def open_api(
    settings: Settings, topics: None, database: None
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with CEREBELUM_API_AUTH=off: what is left to stop a cross-site request."""
    async with serve(settings, ApiSettings(auth=False)) as http:
        yield http


@pytest.fixture(scope="module")
async def running(settings: Settings, database: None) -> str:
    """An execution PostgreSQL shows running: a signal or cancel of it would be accepted."""
    eid = f"sec-{uuid.uuid4().hex}"
    pool = await connect_pool(settings.namespace_database_url, min_size=1, max_size=1)
    try:
        event = make_event(eid, 1, ev.EXECUTION_STARTED, AT, workflow="approver",
                           workflow_version="v", inputs={})  # fmt: skip
        rows = sort_and_dedupe([decode_event(orjson.dumps(event),
                                             partition_for(eid), 0)])  # fmt: skip
        async with pool.acquire() as conn:
            await write_batch(conn, rows, settings.names.mirrored_channel)
    finally:
        await pool.close()
    return eid


async def command_offsets(settings: Settings) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.names.commands, p) for p in range(PARTITIONS)]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


def every_route(eid: str) -> list[tuple[str, str]]:
    return [
        ("POST", "/executions"),
        ("POST", f"/executions/{eid}/signals/approval"),
        ("POST", f"/executions/{eid}/cancel"),
        ("GET", f"/executions/{eid}"),
        ("GET", f"/executions/{eid}/events"),
        ("GET", "/executions"),
        ("GET", "/cluster"),
        ("GET", "/dlq"),
        ("GET", "/workflows"),
    ]


async def test_without_a_valid_token_only_the_probes_and_pages_without_data_answer(
    api: httpx.AsyncClient, settings: Settings, running: str
) -> None:
    before = await command_offsets(settings)
    for method, path in every_route(running):
        for headers in ({}, {"authorization": "Bearer cbl_not-a-token"}):
            response = await api.request(
                method, path, headers={**headers, **JSON}, content=b'{"workflow": "w3"}'
            )
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert set(response.json()) == {"error"}
    # The probes, the dashboard's page and the API's description hold no execution data.
    for path in ("/healthz", "/readyz", "/", "/openapi.json", "/docs", "/redoc"):
        response = await api.get(path)
        assert response.status_code == 200, response.text
    assert (await api.get("/readyz")).json() == {"ready": True, "kafka": True, "database": True}
    assert await command_offsets(settings) == before


async def test_a_token_opens_only_its_scope_and_admin_opens_all(
    api: httpx.AsyncClient, settings: Settings, running: str
) -> None:
    needs = {
        ("GET", f"/executions/{running}"): "read",
        ("GET", f"/executions/{running}/events"): "read",
        ("GET", "/executions"): "read",
        ("GET", "/dlq"): "read",
        ("GET", "/workflows"): "read",
        ("GET", "/cluster"): "admin",
        ("POST", "/executions"): "start",
        ("POST", f"/executions/{running}/signals/approval"): "signal",
        ("POST", f"/executions/{running}/cancel"): "cancel",
    }
    before = await command_offsets(settings)
    for (method, path), needed in needs.items():
        for scope in SCOPES:
            if scope in (needed, "admin"):
                continue
            response = await api.request(method, path, headers={**bearer(scope), **JSON},
                                         content=b'{"workflow": "w3"}')  # fmt: skip
            assert response.status_code == 403, (scope, method, path, response.text)
            assert response.json()["scope"] == needed
    assert await command_offsets(settings) == before  # refused: nothing produced

    for (method, path), needed in needs.items():
        if method == "GET":
            for scope in (needed, "admin"):
                response = await api.get(path, headers=bearer(scope))
                assert response.status_code == 200, (scope, path, response.text)
    eid = f"sec-start-{uuid.uuid4().hex}"
    response = await api.post("/executions", headers=bearer("start"),
                              json={"workflow": "anything", "execution_id": eid})  # fmt: skip
    assert response.status_code in (202, 409), response.text  # 409: a live worker lacks it
    response = await api.post(f"/executions/{running}/signals/approval",
                              headers={**bearer("signal"), **JSON}, content=b"")  # fmt: skip
    assert response.status_code == 202, response.text
    response = await api.post(f"/executions/{running}/cancel", headers=bearer("cancel"),
                              json={"reason": "security test"})  # fmt: skip
    assert response.status_code == 202, response.text


CROSS_SITE = [
    {"content-type": "text/plain"},
    {"content-type": "application/x-www-form-urlencoded"},
    {"content-type": "multipart/form-data; boundary=x"},
    {},
]


@pytest.mark.parametrize("headers", CROSS_SITE)
@pytest.mark.parametrize("body", [b'{"approved": true}', b""])
async def test_cross_site_posts_approve_or_cancel_nothing(
    api: httpx.AsyncClient,
    open_api: httpx.AsyncClient,
    settings: Settings,
    running: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    """What a page on another site can send without a preflight: text/plain, a form or no
    body. Refused (415) with or without a token, and with authentication off."""
    before = await command_offsets(settings)
    for http, auth in ((api, bearer("admin")), (open_api, {})):
        for path in (f"/executions/{running}/signals/approval", f"/executions/{running}/cancel",
                     "/executions"):  # fmt: skip
            response = await http.post(path, content=body, headers={**auth, **headers})
            assert response.status_code == 415, (path, headers, response.text)
            assert response.json() == {"error": "Content-Type must be application/json"}
    assert await command_offsets(settings) == before


async def test_a_host_not_allowed_is_400(api: httpx.AsyncClient, running: str) -> None:
    for method, path in [*every_route(running), ("GET", "/healthz"), ("GET", "/readyz")]:
        headers = {**bearer("admin"), **JSON, "host": "attacker.example"}
        response = await api.request(method, path, headers=headers)
        assert response.status_code == 400, (path, response.text)
        assert response.json() == {"error": "Host header not allowed", "host": "attacker.example"}
    for host in ("localhost:8080", "127.0.0.1", "[::1]:8080"):
        response = await api.get("/executions", headers={**bearer("read"), "host": host})
        assert response.status_code == 200, host


async def test_every_answer_carries_the_security_headers(
    api: httpx.AsyncClient, running: str
) -> None:
    answers = [
        await api.get("/healthz"),
        await api.get(f"/executions/{running}", headers=bearer("read")),
        await api.get("/executions/nobody-here", headers=bearer("read")),
        await api.get("/executions"),
        await api.get("/cluster", headers=bearer("read")),
        await api.post("/executions", headers=bearer("start"), content=b"{}"),
        await api.get("/executions", headers={"host": "attacker.example"}),
    ]
    assert [r.status_code for r in answers] == [200, 200, 404, 401, 403, 415, 400]
    for response in answers:
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "access-control-allow-origin" not in response.headers  # CORS is off


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        (b"[" * 100 + b"]" * 100, "deeper than 64 levels"),
        (b"[" * 100_000 + b"]" * 100_000, "deeper than 64 levels"),
        (b'{"n": 18446744073709551616}', "outside 64 bits"),
        (b'{"n": -9223372036854775809}', "outside 64 bits"),
        (b'{"n": ' + b"9" * 4000 + b"}", "outside 64 bits"),
    ],
)
async def test_deep_nesting_and_huge_integers_are_422_and_produce_nothing(
    api: httpx.AsyncClient, settings: Settings, running: str, inputs: bytes, says: str
) -> None:
    before = await command_offsets(settings)
    attempts = [
        ("/executions", b'{"workflow": "w3", "inputs": ' + inputs + b"}"),
        (f"/executions/{running}/signals/approval", inputs),
        (f"/executions/{running}/cancel", b'{"reason": ' + inputs + b"}"),
    ]
    for path, body in attempts:
        response = await api.post(path, content=body, headers={**bearer("admin"), **JSON})
        assert response.status_code == 422, (path, response.text[:300])
        assert says in response.json()["error"]
    assert await command_offsets(settings) == before


async def test_integers_within_64_bits_travel_exactly(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    eid = f"sec-int-{uuid.uuid4().hex}"
    tp = TopicPartition(settings.names.commands, partition_for(eid))
    start = (await command_offsets(settings))[tp]
    body = b'{"workflow": "w3", "execution_id": "%s", "inputs": {"big": 18446744073709551615}}'
    response = await api.post(
        "/executions", content=body % eid.encode(), headers={**bearer("start"), **JSON}
    )
    assert response.status_code in (202, 409), response.text
    if response.status_code == 202:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, start)
            records = (await consumer.getmany(tp, timeout_ms=5000)).get(tp, [])
            values = [r.value for r in records if r.key == eid.encode()]
            assert values and b'"big":18446744073709551615' in values[0]
        finally:
            await consumer.stop()


async def test_the_openapi_documents_the_entrance(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json", headers=bearer("read"))).json()
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            statuses = set(operation["responses"])
            assert "400" in statuses
            if path in ("/healthz", "/readyz"):
                assert "security" not in operation
                continue
            assert {"401", "403"} <= statuses, (path, method)
            assert operation["security"][0]["bearer"][0] in SCOPES
            if method == "post":
                assert {"413", "415", "422"} <= statuses, (path, method)
    assert set(document["paths"]["/readyz"]["get"]["responses"]) >= {"200", "503"}
