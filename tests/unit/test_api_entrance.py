"""The API's entrance (cerebelum.api.guard) in-process, without Kafka or PostgreSQL: every
request it refuses is refused before a route (and so any service) is reached.

Requests it lets through reach routes whose validation fails before any service is used (422)
or paths no route serves (404): enough to tell "let through" from "refused". The same checks
against the real app with its services: tests/integration/test_api_security.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cerebelum.api import create_app
from cerebelum.api.guard import SCOPE_KEY, HostRule
from cerebelum.api.tokens import ADMIN, CANCEL, READ, SIGNAL, START, token_line
from cerebelum.config import ApiSettings
from cerebelum.errors import ConfigurationError

TOKENS = {name: f"cbl_unit-{name}" for name in (READ, START, SIGNAL, CANCEL, ADMIN)}
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    tokens = tmp_path / "tokens"
    tokens.write_text("".join(f"{token_line(s, [s], t)}\n" for s, t in TOKENS.items()))
    app = create_app(api=ApiSettings(tokens_file=str(tokens)))  # no lifespan: no services
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8080") as http:
        yield http


def bearer(scope: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKENS[scope]}"}


JSON = {"content-type": "application/json"}
# A request per scope whose validation fails (422) once it is let through.
BY_SCOPE = {
    READ: ("GET", "/executions?limit=0"),
    START: ("POST", "/executions"),
    SIGNAL: ("POST", "/executions/bad%20id/signals/go"),
    CANCEL: ("POST", "/executions/bad%20id/cancel"),
}


EVERY_ROUTE = [*BY_SCOPE.values(), ("GET", "/cluster"), ("GET", "/dlq"), ("GET", "/workflows"),
               ("GET", "/nowhere"), ("DELETE", "/executions")]  # fmt: skip
NOT_A_VALID_TOKEN = [{}, {"authorization": "Bearer cbl_wrong"}, {"authorization": "Basic x"},
                     {"authorization": f"bearer{TOKENS[ADMIN]}"}]  # fmt: skip


async def test_without_a_valid_token_every_route_is_401(api: httpx.AsyncClient) -> None:
    for method, path in EVERY_ROUTE:
        for headers in NOT_A_VALID_TOKEN:
            response = await api.request(method, path, headers={**headers, **JSON}, content=b"{}")
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"].startswith('Bearer realm="cerebelum"')
            assert "bearer token" in response.json()["error"]


async def test_each_scope_opens_its_routes_and_admin_opens_all(api: httpx.AsyncClient) -> None:
    for needed, (method, path) in BY_SCOPE.items():
        for scope in TOKENS:
            response = await api.request(method, path, headers={**bearer(scope), **JSON},
                                         content=b'{"workflow": 7}')  # fmt: skip
            if scope in (needed, ADMIN):
                assert response.status_code == 422, (scope, path, response.text)
            else:
                assert response.status_code == 403, (scope, path, response.text)
                assert response.json() == {
                    "error": f"token {scope!r} lacks the {needed!r} scope",
                    "scope": needed,
                }
                assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_the_cluster_view_needs_admin(api: httpx.AsyncClient) -> None:
    for scope in (READ, START, SIGNAL, CANCEL):
        response = await api.get("/cluster", headers=bearer(scope))
        assert response.status_code == 403 and response.json()["scope"] == ADMIN


async def test_the_openapi_document_and_the_docs_are_public_and_local(
    api: httpx.AsyncClient,
) -> None:
    for page, script in (("/docs", "/ui/vendor/swagger-ui-bundle.js"),
                         ("/redoc", "/ui/vendor/redoc.standalone.js")):  # fmt: skip
        html = (await api.get(page)).text
        assert script in html and "cdn." not in html and "fonts.googleapis" not in html
        assert (await api.get(script)).status_code == 200
    response = await api.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    operations = {
        (path, method): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    assert operations["/executions", "post"]["security"] == [{"bearer": [START]}]
    assert operations["/cluster", "get"]["security"] == [{"bearer": [ADMIN]}]
    assert "security" not in operations["/readyz", "get"]
    for (path, method), operation in operations.items():
        statuses = set(operation["responses"])
        assert "400" in statuses, path
        if path not in ("/healthz", "/readyz"):
            assert {"401", "403"} <= statuses, path
        if method == "post":
            assert {"413", "415", "422"} <= statuses, path


async def test_a_valid_token_on_an_unknown_route_gets_404_or_405(api: httpx.AsyncClient) -> None:
    assert (await api.get("/nowhere", headers=bearer(READ))).status_code == 404
    assert (await api.delete("/executions", headers=bearer(READ))).status_code == 405


@pytest.mark.parametrize(
    "headers",
    [{}, {"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"},
     {"content-type": "multipart/form-data; boundary=x"}, {"content-type": "application/json5"}],
)  # fmt: skip
async def test_a_post_that_is_not_json_is_415(
    api: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for path, body in [("/executions", b'{"workflow": "w3"}'),
                       ("/executions/x-1/signals/approval", b'{"approved": true}'),
                       ("/executions/x-1/signals/approval", b""),
                       ("/executions/x-1/cancel", b"")]:  # fmt: skip
        response = await api.post(path, content=body, headers={**bearer(ADMIN), **headers})
        assert response.status_code == 415, (path, headers, response.text)
        assert response.json() == {"error": "Content-Type must be application/json"}


async def test_json_with_a_charset_is_json(api: httpx.AsyncClient) -> None:
    headers = {**bearer(START), "content-type": "Application/JSON; charset=utf-8"}
    response = await api.post("/executions", content=b"{}", headers=headers)
    assert response.status_code == 422  # let through: the body lacks "workflow"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"workflow": "w3", "inputs": ' + b"[" * 65 + b"]" * 65 + b"}", "deeper than 64"),
        (b'{"workflow": "w3", "inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", "deeper than 64"),
        (b'{"workflow": "w3", "inputs": {"n": 18446744073709551616}}', "outside 64 bits"),
        (b'{"workflow": "w3", "inputs": {"n": -9223372036854775809}}', "outside 64 bits"),
    ],
)
async def test_deep_nesting_and_huge_integers_are_422(
    api: httpx.AsyncClient, body: bytes, says: str
) -> None:
    for path in ("/executions", "/executions/x-1/signals/approval", "/executions/x-1/cancel"):
        response = await api.post(path, content=body, headers={**bearer(ADMIN), **JSON})
        assert response.status_code == 422, (path, response.text)
        assert says in response.json()["error"]


async def test_a_host_not_allowed_is_400_on_every_route(api: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/executions", "/openapi.json"):
        for host in ("evil.example", "localhost.evil.example", "127.0.0.1.nip.io:8080", ""):
            response = await api.get(path, headers={**bearer(ADMIN), "host": host})
            assert response.status_code == 400, (path, host)
            assert response.json() == {"error": "Host header not allowed", "host": host}
            assert response.headers["x-frame-options"] == "DENY"


def test_host_rules() -> None:
    rule = HostRule(["localhost", "127.0.0.1", "[::1]", "*.example.com", "API.internal"])
    for host in ("localhost", "LOCALHOST:8080", "127.0.0.1:1", "[::1]:8080", "[::1]",
                 "a.example.com", "b.a.example.com:443", "api.internal"):  # fmt: skip
        assert rule.allows(host), host
    for host in (None, "", "example.com", "evilexample.com", "localhost.evil", "::1", "[::2]"):
        assert not rule.allows(host), host
    assert HostRule(["*"]).allows("anything.at.all")


async def test_every_answer_has_the_security_headers(api: httpx.AsyncClient) -> None:
    answers = [
        await api.get("/executions"),  # 401
        await api.get("/nowhere", headers=bearer(READ)),  # 404
        await api.get("/openapi.json", headers=bearer(READ)),  # 200
        await api.post("/executions", headers=bearer(START)),  # 415
    ]
    for response in answers:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value, (response.request.url, name)
        assert response.headers["content-security-policy"] == (
            "default-src 'none'; frame-ancestors 'none'"
        )
    docs = await api.get("/docs", headers=bearer(READ))
    assert docs.status_code == 200
    assert docs.headers["content-security-policy"] == "frame-ancestors 'none'"
    assert docs.headers["x-frame-options"] == "DENY"


async def test_cors_is_off_unless_origins_are_configured(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    preflight = {"origin": "https://evil.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "authorization, content-type"}  # fmt: skip
    response = await api.options("/executions", headers=preflight)
    assert response.status_code == 401 and "access-control-allow-origin" not in response.headers

    app = create_app(api=ApiSettings(auth=False, cors_origins=("https://ops.example",)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        response = await http.options(
            "/executions", headers={**preflight, "origin": "https://ops.example"}
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://ops.example"
        assert response.headers["x-content-type-options"] == "nosniff"
        response = await http.options("/executions", headers=preflight)
        assert response.status_code == 400
        assert "access-control-allow-origin" not in response.headers


async def test_with_auth_off_the_rest_of_the_entrance_still_applies() -> None:
    app = create_app(api=ApiSettings(auth=False))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        assert (await http.get("/executions?limit=0")).status_code == 422  # no token needed
        response = await http.post("/executions/x-1/cancel", content=b"")
        assert response.status_code == 415
        response = await http.get("/executions", headers={"host": "evil.example"})
        assert response.status_code == 400


def test_the_app_refuses_to_be_made_with_auth_on_and_no_tokens() -> None:
    with pytest.raises(ConfigurationError, match="no tokens are configured"):
        create_app(api=ApiSettings())


async def test_an_unhandled_error_is_a_500_in_the_error_shape_with_the_headers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(api=ApiSettings(auth=False))

    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/broken", broken, openapi_extra={SCOPE_KEY: READ})
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        response = await http.get("/broken")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}  # the bug's text stays in the log
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name
    assert "unhandled error on GET /broken" in caplog.text and "a bug" in caplog.text


async def test_the_dashboard_page_needs_no_token_and_loads_nothing_from_elsewhere(
    api: httpx.AsyncClient,
) -> None:
    page = await api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert (
        "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    )
    assert page.headers["x-frame-options"] == "DENY"
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        asset = await api.get(f"/ui/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        text = asset.text
        assert "http://" not in text and "https://" not in text  # offline: nothing external
        assert "innerHTML" not in text and "eval(" not in text  # API values go in as text only
    assert "http" not in page.text.replace("http-equiv", "")
    assert (await api.get("/ui/other.js")).status_code == 401  # only the page's own files
    assert (await api.post("/", headers=JSON, content=b"{}")).status_code == 401


async def test_a_nul_in_a_query_string_is_422_on_every_guarded_route(
    api: httpx.AsyncClient,
) -> None:
    for path in ("/executions?status=a%00b", "/dlq?reason=%00", "/workflows?x=%00",
                 "/executions/x-1/state?diff=%00"):  # fmt: skip
        response = await api.get(path, headers=bearer(ADMIN))
        assert response.status_code == 422, (path, response.text)
        assert response.json() == {"error": "query parameters may not contain NUL (%00)"}
