"""Bearer JWTs from an OpenID Connect provider (optional: CEREBELUM_API_JWKS_URL).

A JWT is accepted when:
  1. its header names a key (`kid`) of the provider's JWKS, fetched from the JWKS URL and
     cached (PyJWT's PyJWKClient; an unknown `kid` refetches it, at most every 30 s);
  2. it is signed with that key by an asymmetric algorithm (ALGORITHMS: never "none" nor an
     HMAC, which would let a public key act as a shared secret);
  3. it has not expired (`exp` required) and its `aud` and `iss` are the configured ones.
Its scopes are the known ones (cerebelum.api.tokens.SCOPES) in its `scope` claim (a
space-separated string, RFC 8693) or `scp` (a list or a string, as Azure AD and Okta send);
its name in logs is its `sub`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import jwt

from cerebelum.api.tokens import SCOPES, Caller

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
# The JWKS changes when the provider rotates keys: refetched every five minutes, or at once
# (at most every 30 s) for a token naming a key not seen yet.
JWKS_CACHE_S = 300
# A JWKS request is small; a provider slower than this fails the request (401) rather than
# holding it.
JWKS_TIMEOUT_S = 5
# Clocks drift: an `exp` or `nbf` this close is given the benefit of the doubt.
LEEWAY_S = 30


class JwtVerifier:
    def __init__(self, jwks_url: str, audience: str, issuer: str) -> None:
        self.audience = audience
        self.issuer = issuer
        self.keys = jwt.PyJWKClient(
            jwks_url, cache_jwk_set=True, lifespan=JWKS_CACHE_S, timeout=JWKS_TIMEOUT_S
        )

    async def verify(self, token: str) -> Caller | None:
        """The caller `token` names, or None if it is not a valid JWT for this API."""
        try:
            # A thread: the first use (and a key rotation) fetches the JWKS with blocking I/O.
            key = await asyncio.to_thread(self.keys.get_signing_key_from_jwt, token)
            claims = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            log.info("api: JWT refused: %s", exc)
            return None
        return Caller(str(claims.get("sub") or "jwt"), scopes_of(claims))


def scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    """The known scopes in a JWT's `scope` or `scp` claim (unknown ones are ignored)."""
    found: set[str] = set()
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return frozenset(found & set(SCOPES))
