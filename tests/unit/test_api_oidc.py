"""JWTs from an OpenID Connect provider: an RSA key made here, its JWKS served on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from cerebelum.api import create_app
from cerebelum.api.oidc import JwtVerifier, scopes_of
from cerebelum.api.tokens import Caller, token_line
from cerebelum.config import ApiSettings
from cerebelum.errors import ConfigurationError

AUDIENCE = "cerebelum-api"
ISSUER = "https://login.example"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
READ_PATH = "/executions?limit=0"  # let through, it fails validation: 422
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    jwk = json.loads(RSAAlgorithm.to_jwk(KEY.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


def token(key: Any = KEY, kid: str = "k1", alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "ana@example", "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 300,
            "scope": "read start"} | claims  # fmt: skip
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, alg, {"kid": kid})


async def test_a_valid_jwt_names_its_subject_and_scopes(jwks_url: str) -> None:
    verifier = JwtVerifier(jwks_url, AUDIENCE, ISSUER)
    assert await verifier.verify(token()) == Caller("ana@example", frozenset({"read", "start"}))
    caller = await verifier.verify(token(scope=None, scp=["signal", "cancel", "openid"]))
    assert caller == Caller("ana@example", frozenset({"signal", "cancel"}))


@pytest.mark.parametrize(
    "bad",
    [
        token(aud="another-api"),
        token(iss="https://evil.example"),
        token(exp=int(time.time()) - 3600),
        token(exp=None),
        token(aud=None),
        token(key=OTHER_KEY),  # the right kid, another key
        token(kid="k2"),  # a key the JWKS does not have
        "not.a.jwt",
        "",
    ],
)
async def test_a_jwt_that_is_not_for_this_api_is_refused(jwks_url: str, bad: str) -> None:
    assert await JwtVerifier(jwks_url, AUDIENCE, ISSUER).verify(bad) is None


async def test_unsigned_and_hmac_jwts_are_refused(jwks_url: str) -> None:
    verifier = JwtVerifier(jwks_url, AUDIENCE, ISSUER)
    now = int(time.time())
    claims = {"sub": "x", "aud": AUDIENCE, "iss": ISSUER, "exp": now + 300, "scope": "admin"}
    unsigned = jwt.encode(claims, None, "none", {"kid": "k1"})  # type: ignore[arg-type]
    assert await verifier.verify(unsigned) is None
    # The public key used as an HMAC secret: the classic algorithm confusion (made by hand:
    # PyJWT itself refuses to sign so).
    public = RSAAlgorithm.to_jwk(KEY.public_key()).encode()
    signed = b".".join(_b64(json.dumps(part).encode())
                       for part in ({"alg": "HS256", "kid": "k1"}, claims))  # fmt: skip
    forged = signed + b"." + _b64(hmac.new(public, signed, hashlib.sha256).digest())
    assert await verifier.verify(forged.decode()) is None


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def test_scopes_come_from_scope_or_scp_and_only_known_ones_count() -> None:
    assert scopes_of({"scope": "read  admin email"}) == {"read", "admin"}
    assert scopes_of({"scp": "signal"}) == {"signal"}
    assert scopes_of({"scp": ["cancel", 7]}) == {"cancel"}
    assert scopes_of({"scope": 12}) == set() and scopes_of({}) == set()


def test_a_jwks_needs_an_audience_and_an_issuer() -> None:
    with pytest.raises(ConfigurationError, match="needs CEREBELUM_API_JWT_AUDIENCE"):
        ApiSettings(jwks_url="https://login.example/jwks", jwt_issuer=ISSUER)
    with pytest.raises(ConfigurationError, match="needs CEREBELUM_API_JWT_AUDIENCE"):
        ApiSettings.from_env({"CEREBELUM_API_JWKS_URL": "x", "CEREBELUM_API_JWT_AUDIENCE": "a"})


async def test_the_api_takes_jwts_beside_its_own_tokens(jwks_url: str, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(token_line("bot", ["cancel"], "cbl_unit-bot") + "\n")
    api = ApiSettings(tokens_file=str(tokens), jwks_url=jwks_url, jwt_audience=AUDIENCE,
                      jwt_issuer=ISSUER)  # fmt: skip
    app = create_app(api=api)  # no lifespan: requests stop at the entrance or at validation
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:

        async def status(
            bearer: str, method: str = "GET", path: str = "/executions?limit=0"
        ) -> int:
            headers = {"authorization": f"Bearer {bearer}", "content-type": "application/json"}
            return (await http.request(method, path, headers=headers, content=b"{}")).status_code

        assert await status(token()) == 422  # read: let through to validation
        assert await status(token(scope="start"), "POST", "/executions") == 422
        assert await status(token(scope="read"), "POST", "/executions") == 403
        assert await status(token(aud="another-api")) == 401
        assert await status("cbl_unit-bot") == 403  # its own token, without read
        assert await status("cbl_unit-bot", "POST", "/executions/bad%20id/cancel") == 422

    jwt_only = ApiSettings(jwks_url=jwks_url, jwt_audience=AUDIENCE, jwt_issuer=ISSUER)
    create_app(api=jwt_only)  # a JWKS alone is a way to authenticate: no tokens file needed
