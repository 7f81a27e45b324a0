"""Addresses as they may be logged or printed: passwords replaced by a mask.

Every log line, error message or status output that names a database URL or a Kafka bootstrap
goes through `redact`, so a password given inside a URL never leaves the process.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from cerebelum.security.secret import MASK

# Query parameters of a DSN that carry secrets (libpq's names, and a generic spelling).
_SECRET_PARAMS = frozenset({"password", "sslpassword", "passfile_password", "secret", "token"})
# `user:password@` inside anything URL-shaped, for strings urlsplit cannot read.
# Also catches what urlsplit does not read as a URL (`sasl_ssl://`: "_" is no scheme letter).
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+._-]*://)(?P<user>[^:@/\s,]*):[^@/\s,]*@")


def redact(address: str) -> str:
    """`address` with any password masked: URL userinfo, secret query parameters, and a
    libpq `key=value` DSN's password."""
    if "://" not in address:
        return _redact_keywords(address)
    try:
        parts = urlsplit(address)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostinfo = netloc.rpartition("@")
            netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{hostinfo}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, MASK if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="/*"
            )
        address = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # an unparsable URL (a bad port, say): the pattern below masks it
        pass
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", address)


def _redact_keywords(dsn: str) -> str:
    # libpq's keyword form: "host=... user=... password=secret" (quoted values allowed).
    return re.sub(
        r"(\b(?:password|sslpassword)\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)",
        lambda m: f"{m.group(1)}{MASK}",
        dsn,
        flags=re.IGNORECASE,
    )
