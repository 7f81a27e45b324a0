"""The API's entrance: what every request passes before a route sees it.

Two ASGI middlewares, outermost first (CORS, when configured, sits between them so that a
browser's preflight, which carries no token, is answered):

`Gate`, on every request and response:
  1. the Host header must be an allowed host (CEREBELUM_API_ALLOWED_HOSTS) → else 400;
  2. every response gets the security headers (SECURITY_HEADERS), a 500 too: an error no
     handler took is logged and answered here (Starlette's own 500 would bypass the headers).

`Guard`, on every request but the public probes (/healthz, /readyz):
  1. a bearer token the tokens file knows, or a JWT the configured provider signed
     (cerebelum.api.oidc) → else 401 with `WWW-Authenticate: Bearer`;
  2. a token with the route's scope (admin opens all) → else 403. A path or method no route
     serves needs any valid token, and then gets its 404 or 405: nobody learns the routes
     without a token;
  3. a state-changing request (POST, PUT, PATCH, DELETE) a route serves must say `Content-Type:
     application/json`, even with an empty body → else 415. A browser sends a cross-site
     request without asking first only with a text/plain, form or empty body, so such a
     request never reaches a route that approves or cancels;
  4. a query string holding NUL (%00) → 422 (PostgreSQL takes no NUL in text);
  5. its body is read whole (at most bodies.MAX_BODY_BYTES → else 413) and must be JSON within
     the limits of cerebelum.api.bodies → else 400 or 422; the route then reads it as usual.

Every refusal is the API's one error shape, `{"error": "..."}`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.routing import BaseRoute, Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cerebelum.api.bodies import MAX_BODY_BYTES, BodyProblem, check_json_body
from cerebelum.api.errors import OrjsonResponse, error_response
from cerebelum.api.tokens import ADMIN, READ, Authenticator

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
# The key of a route's `openapi_extra` naming the scope it needs (and documenting it).
SCOPE_KEY = "x-required-scope"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# On every response. The API's JSON is never meant to be rendered, framed, cached or to leak
# its URL to another site: nosniff and a CSP of nothing keep a browser from treating a JSON
# answer as a page, DENY and frame-ancestors from framing one (clickjacking), no-store from
# keeping execution data in shared caches, no-referrer from sending ids to links' targets.
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}
# The interactive docs (/docs, /redoc) are pages that load FastAPI's scripts from a CDN: only
# framing is forbidden there.
DOCS_CSP = "frame-ancestors 'none'"


class Gate:
    """Host allowlist and security headers (steps 1-2 above)."""

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: Iterable[str],
        docs_paths: Iterable[str],
        pages: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.hosts = HostRule(allowed_hosts)
        self.docs_paths = frozenset(p for p in docs_paths if p)
        # Pages with their own content security policy (the dashboard's path -> its CSP).
        self.pages = dict(pages or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope["path"] in self.docs_paths else self.pages.get(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name == "content-security-policy" and csp is not None:
                        value = csp
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        host = _header(scope, b"host")
        if not self.hosts.allows(host):
            refusal = error_response(400, "Host header not allowed", host=host)
            await refusal(scope, receive, send_with_headers)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_with_headers(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            if started:
                raise  # half a response is out: the server can only drop the connection
            log.exception("api: unhandled error on %s %s", scope["method"], scope["path"])
            await error_response(500, "internal error")(scope, receive, send_with_headers)


class HostRule:
    """Which Host header values are answered: exact names, "*.suffix" for subdomains, "*"."""

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = [p.strip().lower() for p in patterns if p.strip()]
        self.any = "*" in patterns
        self.exact = frozenset(p for p in patterns if not p.startswith("*"))
        self.suffixes = tuple(p[1:] for p in patterns if p.startswith("*."))

    def allows(self, host: str | None) -> bool:
        if self.any:
            return True
        if not host:
            return False
        name = _without_port(host.strip().lower())
        return name in self.exact or any(name.endswith(s) for s in self.suffixes)


def _without_port(host: str) -> str:
    if host.startswith("["):  # [::1]:8080
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """Authentication, scopes, content type, NUL and body limits (steps 1-5 above). With
    `authenticator` None (CEREBELUM_API_AUTH=off) steps 1-2 are skipped, 3-5 still apply.
    `public` paths (the dashboard's page and assets: no data, see cerebelum.api.dashboard)
    need no token, like the probes."""

    def __init__(
        self,
        app: ASGIApp,
        router: Router,
        authenticator: Authenticator | None,
        docs_paths: Iterable[str],
        public: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.router = router
        self.authenticator = authenticator
        self.docs_paths = frozenset(p for p in docs_paths if p)
        self.public = PUBLIC_PATHS | frozenset(public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["path"] in self.public and scope["method"] == "GET"):
            await self.app(scope, receive, send)
            return
        if b"%00" in scope.get("query_string", b""):
            # PostgreSQL cannot store or compare text with NUL: refused here for every route.
            nul = error_response(422, "query parameters may not contain NUL (%00)")
            await nul(scope, receive, send)
            return
        route = self.route_for(scope)
        if self.authenticator is not None:
            refusal = await self.authorize(self.authenticator, scope, route)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        if route is not None and scope["method"] in STATE_CHANGING:
            if not _is_json(_header(scope, b"content-type")):
                refusal = error_response(415, "Content-Type must be application/json")
                await refusal(scope, receive, send)
                return
            try:
                body = await _read_body(scope, receive)
                check_json_body(body)
            except BodyProblem as problem:
                await error_response(problem.status, problem.message)(scope, receive, send)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def route_for(self, scope: Scope) -> BaseRoute | None:
        """The route that will serve `scope`; None for a path or method none serves."""
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route
        return None

    async def authorize(
        self, authenticator: Authenticator, scope: Scope, route: BaseRoute | None
    ) -> OrjsonResponse | None:
        """None if the request may go on, else the 401 or 403 response."""
        header = _header(scope, b"authorization") or ""
        kind, _, presented = header.partition(" ")
        if kind.lower() != "bearer" or not presented.strip():
            return _unauthorized("missing bearer token (Authorization: Bearer <token>)", None)
        token = await authenticator.authenticate(presented.strip())
        if token is None:
            return _unauthorized("invalid bearer token", "invalid_token")
        needed = self.required_scope(scope, route)
        if needed is not None and not token.allows(needed):
            response = error_response(
                403, f"token {token.name!r} lacks the {needed!r} scope", scope=needed
            )
            response.headers["www-authenticate"] = (
                f'Bearer realm="cerebelum", error="insufficient_scope", scope="{needed}"'
            )
            return response
        scope.setdefault("state", {})["caller"] = token.name  # request.state.caller, for logs
        return None

    def required_scope(self, scope: Scope, route: BaseRoute | None) -> str | None:
        """The scope `route` needs; None where no route serves the request (any valid token
        then gets the 404 or 405). A route that names none needs admin."""
        if route is None:
            return None
        if scope["path"] in self.docs_paths:
            return READ
        extra = getattr(route, "openapi_extra", None) or {}
        return str(extra.get(SCOPE_KEY, ADMIN))


def _unauthorized(message: str, error: str | None) -> OrjsonResponse:
    response = error_response(401, message)
    challenge = 'Bearer realm="cerebelum"' + (f', error="{error}"' if error else "")
    response.headers["www-authenticate"] = challenge
    return response


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _is_json(content_type: str | None) -> bool:
    """application/json, with parameters (charset) or not."""
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


async def _read_body(scope: Scope, receive: Receive) -> bytes:
    """The whole body, refusing (413) past MAX_BODY_BYTES before reading further."""
    length = _header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise BodyProblem(413, f"body is over the limit of {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyProblem(413, f"body is over the limit of {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the route the body already read, then defers to the client."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# What the entrance's refusals mean, for the OpenAPI document.
_ENTRANCE_STATUSES = {
    "401": "No bearer token, or one the tokens file does not know (`WWW-Authenticate: " "Bearer`).",
    "403": "The token lacks the scope this route needs (the body names it).",
    "413": f"The body is over {MAX_BODY_BYTES} bytes.",
    "415": "A state-changing request without `Content-Type: application/json` (an empty "
    "body too).",
    "422": "A query parameter holds NUL (%00), which no route takes.",
}
_HOST_400 = "The Host header is not an allowed host (CEREBELUM_API_ALLOWED_HOSTS)."


def document_entrance(openapi: dict[str, Any]) -> dict[str, Any]:
    """Add the entrance's statuses and the bearer scheme to the OpenAPI document `openapi`:
    400 (Host) on every route; 401 and 403 with the route's scope on all but the probes; 413
    and 415 on state-changing routes."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    components = openapi.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from `cerebelum api token create`; its scopes open routes.",
    }
    for path, operations in openapi.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if "400" in responses:
                responses["400"]["description"] += " Or: " + _HOST_400
            else:
                responses["400"] = {"description": _HOST_400, "content": error}
            statuses = []
            if path not in PUBLIC_PATHS:
                scope = operation.get(SCOPE_KEY, ADMIN)
                operation["security"] = [{"bearer": [scope]}]
                statuses += ["401", "403", "422"]
            if method.upper() in STATE_CHANGING:
                statuses += ["413", "415"]
            for status in statuses:
                if status not in responses:
                    responses[status] = {
                        "description": _ENTRANCE_STATUSES[status],
                        "content": error,
                    }
    return openapi
