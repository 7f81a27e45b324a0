"""API tokens: the tokens file, how a presented token is checked, and what its scopes allow.

A token is a random secret (`cbl_` and 43 URL-safe characters: 256 bits) shown once, when made
(`cerebelum api token create`). The tokens file (CEREBELUM_API_TOKENS_FILE) keeps only its
SHA-256, one token a line:

    # name:scopes:hash                  (blank lines and # comments are ignored)
    deploy-bot:start,read:sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08

A plain SHA-256, unsalted, is enough for a secret with 256 bits of randomness: nobody can guess
their way back from the hash (a password would need a slow, salted hash). A presented token is
hashed and compared with every stored hash in constant time (hmac.compare_digest), all of them,
so the answer's timing tells nothing about how close a guess was.

Scopes: `read` (GET routes), `start`, `signal`, `cancel`, and `admin`, which implies them all
(and alone opens /cluster).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cerebelum.config import ApiSettings
from cerebelum.errors import ConfigurationError

READ, START, SIGNAL, CANCEL, ADMIN = "read", "start", "signal", "cancel", "admin"
SCOPES = (READ, START, SIGNAL, CANCEL, ADMIN)

TOKEN_PREFIX = "cbl_"  # tells a leaked token apart in logs and secret scanners
# 32 random bytes: 256 bits, beyond any guessing, and the size secrets' docs recommend.
TOKEN_BYTES = 32
HASH_PREFIX = "sha256"

log = logging.getLogger(__name__)

# How often the tokens file is looked at again for changes (one stat, on a request).
RELOAD_CHECK_S = 1.0

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}")
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who presented a valid bearer token: its name (for logs) and its scopes."""

    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return allows(self.scopes, scope)


@dataclass(frozen=True, slots=True)
class StoredToken:
    """One line of the tokens file: who, what it may do, and the SHA-256 of its secret."""

    name: str
    scopes: frozenset[str]
    digest: bytes

    def allows(self, scope: str) -> bool:
        return allows(self.scopes, scope)


def allows(granted: Iterable[str], needed: str) -> bool:
    """Whether scopes `granted` open a route that needs `needed` (admin opens everything)."""
    granted = set(granted)
    return ADMIN in granted or needed in granted


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """The hex SHA-256 of `token`, as the tokens file holds it."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_line(name: str, scopes: Iterable[str], token: str) -> str:
    """The tokens-file line for `token` (checked as the file's parser would)."""
    line = f"{name}:{','.join(sorted(set(scopes)))}:{HASH_PREFIX}:{hash_token(token)}"
    parse_line(line)
    return line


def parse_scopes(text: str) -> frozenset[str]:
    """`read,start` as a set; raises ConfigurationError for an unknown or missing scope."""
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown:
        raise ConfigurationError(f"unknown scope {unknown[0]!r} (scopes: {', '.join(SCOPES)})")
    if not scopes:
        raise ConfigurationError(f"no scope given (scopes: {', '.join(SCOPES)})")
    return scopes


def parse_line(line: str) -> StoredToken:
    """One `name:scopes:sha256:<hex>` line; raises ConfigurationError saying what is wrong."""
    parts = line.strip().split(":")
    if len(parts) != 4 or parts[2] != HASH_PREFIX:
        raise ConfigurationError(
            f"expected name:scope,scope:{HASH_PREFIX}:<64 hex digits> "
            "(the file holds hashes, never tokens: `cerebelum api token create` prints the line)"
        )
    name, scopes, _, digest = parts
    if not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"token name {name!r} must be 1-100 of A-Z a-z 0-9 _ . @ - (not starting with one "
            "of _ . @ -)"
        )
    if not _HEX_SHA256.fullmatch(digest):
        raise ConfigurationError(f"token {name!r}: the hash must be 64 lowercase hex digits")
    return StoredToken(name, parse_scopes(scopes), bytes.fromhex(digest))


def parse_tokens(text: str, source: str = "the tokens file") -> list[StoredToken]:
    """Every token in a tokens file's text; an error names the line. Names and hashes must be
    unique (a repeated name would make the log ambiguous; a repeated hash, the scopes)."""
    tokens: list[StoredToken] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            token = parse_line(line)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{source}, line {number}: {exc}") from None
        for other in tokens:
            if token.name == other.name or token.digest == other.digest:
                what = "name" if token.name == other.name else "hash"
                raise ConfigurationError(
                    f"{source}, line {number}: the same {what} as token {other.name!r}"
                )
        tokens.append(token)
    return tokens


class TokenBook:
    """The tokens the API accepts."""

    def __init__(self, tokens: Iterable[StoredToken]) -> None:
        self.tokens = tuple(tokens)

    def authenticate(self, presented: str) -> StoredToken | None:
        """The stored token whose hash `presented` has, or None. Compares with every stored
        hash, in constant time each, whatever matches."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for token in self.tokens:
            if hmac.compare_digest(digest, token.digest):
                found = token
        return found


def load_token_book(path: Path) -> TokenBook:
    """The tokens in the file at `path`; raises ConfigurationError for a file that cannot be
    read, has a wrong line or holds no token."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the tokens file {path} (CEREBELUM_API_TOKENS_FILE): {exc.strerror}"
        ) from None
    tokens = parse_tokens(text, str(path))
    if not tokens:
        raise ConfigurationError(f"the tokens file {path} holds no token: nobody could call")
    return TokenBook(tokens)


class TokenFile:
    """The tokens file, read again when it changes, so a token made or revoked counts without
    a restart: on a request, at most every RELOAD_CHECK_S, one stat; a file whose modification
    time, size or inode changed is read again.

    A changed file that cannot be read, holds a bad line or no token leaves the tokens read
    before in force and is logged as an error (as a proxy keeps its old configuration when a
    new one is broken): a file caught half-written never locks every caller out. Write it
    whole and rename it into place (`cerebelum api token create --file` does) to revoke.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self._seen = self._stamp()
        self.book = load_token_book(path)
        self._next_check = clock() + RELOAD_CHECK_S

    def authenticate(self, presented: str) -> StoredToken | None:
        self._maybe_reload()
        return self.book.authenticate(presented)

    def _maybe_reload(self) -> None:
        now = self.clock()
        if now < self._next_check:
            return
        self._next_check = now + RELOAD_CHECK_S
        stamp = self._stamp()
        if stamp == self._seen:
            return
        self._seen = stamp
        try:
            book = load_token_book(self.path)
        except ConfigurationError as exc:
            log.error("api: the tokens file changed and is not used, the previous tokens "
                      "stay in force: %s", exc)  # fmt: skip
            return
        self.book = book
        log.info("api: tokens file %s read again: %d tokens", self.path, len(book.tokens))

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)


class Verifier(Protocol):
    """Checks a bearer token that is not one of ours (a JWT: cerebelum.api.oidc)."""

    async def verify(self, token: str) -> Caller | None: ...


class Authenticator:
    """Who a bearer token names: one of the tokens file's (they start with TOKEN_PREFIX), or
    else a JWT the verifier accepts."""

    def __init__(
        self, tokens: TokenBook | TokenFile | None, verifier: Verifier | None = None
    ) -> None:
        self.tokens = tokens
        self.verifier = verifier

    async def authenticate(self, presented: str) -> Caller | None:
        if presented.startswith(TOKEN_PREFIX):
            found = None if self.tokens is None else self.tokens.authenticate(presented)
            return None if found is None else Caller(found.name, found.scopes)
        return None if self.verifier is None else await self.verifier.verify(presented)


def load_authenticator(api: ApiSettings) -> Authenticator | None:
    """How `api` authenticates callers; None when authentication is off. Raises
    ConfigurationError when it is on and there is no way to authenticate."""
    if not api.auth:
        return None
    if api.tokens_file is None and api.jwks_url is None:
        raise ConfigurationError(
            "API authentication is on and no tokens are configured: set "
            "CEREBELUM_API_TOKENS_FILE (make tokens with `cerebelum api token create`) or "
            "CEREBELUM_API_JWKS_URL, or CEREBELUM_API_AUTH=off where everyone who can reach "
            "the API may start, signal and cancel executions"
        )
    tokens = None if api.tokens_file is None else TokenFile(Path(api.tokens_file))
    verifier = None
    if api.jwks_url is not None:
        from cerebelum.api.oidc import JwtVerifier  # PyJWT: only when JWTs are configured

        assert api.jwt_audience is not None and api.jwt_issuer is not None  # ApiSettings
        verifier = JwtVerifier(api.jwks_url, api.jwt_audience, api.jwt_issuer)
    return Authenticator(tokens, verifier)
