"""`cerebelum api`: serve the HTTP API with uvicorn; `cerebelum api token create|revoke`.

    cerebelum api [--host 127.0.0.1] [--port 8080]
    cerebelum api token create --name NAME --scopes read,start [--file TOKENS_FILE]
    cerebelum api token revoke --name NAME --file TOKENS_FILE

`token create` prints the new token once, on stdout, and never stores it: the tokens file gets
only its SHA-256 (cerebelum.api.tokens). Without --file, the line for the file follows the token
on stdout; with --file it is appended there (the file is created readable by its owner only),
so `TOKEN=$(cerebelum api token create ... --file F)` keeps the token in a variable. Both
commands write the file whole and rename it into place; a running API reads it again within a
second of a change, so neither needs a restart.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import uvicorn

from cerebelum.api import create_app
from cerebelum.api.tokens import SCOPES, new_token, parse_scopes, parse_tokens, token_line
from cerebelum.cli._commands import EXIT_USAGE, fail
from cerebelum.config import ApiSettings, Settings
from cerebelum.errors import ConfigurationError
from cerebelum.telemetry.logs import JSON


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "api",
        help="serve the HTTP API (or `api token create|revoke`)",
        description="Serve the HTTP API. Needs CEREBELUM_API_TOKENS_FILE (see `api token "
        "create`) unless CEREBELUM_API_AUTH=off.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level")
    parser.set_defaults(func=run)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    token = commands.add_parser("token", help="manage API tokens")
    token.set_defaults(func=lambda args: fail("usage: cerebelum api token create ...", EXIT_USAGE))
    token_commands = token.add_subparsers(title="commands", metavar="COMMAND")
    create = token_commands.add_parser(
        "create",
        help="make a new token: prints it once, and the line for the tokens file",
        description="Print a new random token (once: only its hash is kept) and its line for "
        "CEREBELUM_API_TOKENS_FILE, or append the line to --file.",
    )
    create.add_argument("--name", required=True, help="who holds the token (shown in logs)")
    create.add_argument(
        "--scopes", required=True, help=f"comma-separated, of: {', '.join(SCOPES)} (admin: all)"
    )
    create.add_argument("--file", type=Path, help="append the line to this tokens file")
    create.set_defaults(func=create_token)
    revoke = token_commands.add_parser(
        "revoke",
        help="remove a token from a tokens file (a running API stops accepting it within 1 s)",
        description="Remove the token named --name from --file. A running API reads the file "
        "again when it changes: the token is refused within a second, without a restart.",
    )
    revoke.add_argument("--name", required=True, help="the token's name")
    revoke.add_argument("--file", type=Path, required=True, help="the tokens file")
    revoke.set_defaults(func=revoke_token)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    try:
        app = create_app(settings, ApiSettings.from_env())
    except ConfigurationError as exc:
        return fail(str(exc), EXIT_USAGE)
    # In JSON, uvicorn's own loggers (start-up, access lines) go through the root logger's
    # JSON handler (cerebelum.telemetry.logs) instead of uvicorn's text handlers.
    log_config = None if settings.log_format == JSON else uvicorn.config.LOGGING_CONFIG
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, log_config=log_config
    )
    server = uvicorn.Server(config)
    server.run()
    # uvicorn sets `started` once listening; a lifespan failure (no database) never gets there.
    return 0 if server.started else 1


def create_token(args: argparse.Namespace) -> int:
    try:
        scopes = parse_scopes(args.scopes)
        token = new_token()
        line = token_line(args.name, scopes, token)
        if args.file is not None:
            _append(args.file, args.name, line)
    except ConfigurationError as exc:
        return fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        return fail(f"cannot write {args.file}: {exc.strerror}")
    print(token)
    if args.file is None:
        print(line)
        note = (
            "The token is shown once: give it to its holder. Put the second line in the "
            "tokens file (CEREBELUM_API_TOKENS_FILE); a running API reads it again within a "
            "second."
        )
    else:
        note = f"Token {args.name!r} added to {args.file}; a running API accepts it within 1 s."
    print(note + " (The token is not stored anywhere.)", file=sys.stderr)
    return 0


def revoke_token(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        text = path.read_text()
        tokens = parse_tokens(text, str(path))
        if not any(t.name == args.name for t in tokens):
            raise ConfigurationError(f"{path} has no token named {args.name!r}")
        kept = [line for line in text.splitlines(keepends=True) if not _names(line, args.name)]
        _replace(path, "".join(kept))
    except ConfigurationError as exc:
        return fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        return fail(f"cannot rewrite {path}: {exc.strerror}")
    print(f"Token {args.name!r} removed from {path}; a running API refuses it within 1 s.")
    return 0


def _names(line: str, name: str) -> bool:
    """Whether the tokens file line `line` is the token named `name`."""
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#") and stripped.split(":", 1)[0] == name


def _append(path: Path, name: str, line: str) -> None:
    """Add `line` to the tokens file at `path`, refusing a name it already has (and a file
    the API could not read)."""
    text = path.read_text() if path.exists() else ""
    if any(t.name == name for t in parse_tokens(text, str(path))):
        raise ConfigurationError(f"{path} already has a token named {name!r}")
    if text and not text.endswith("\n"):
        text += "\n"
    _replace(path, text + line + "\n")


def _replace(path: Path, text: str) -> None:
    """Write the tokens file whole beside itself, then rename it into place: a running API that
    reads it again (cerebelum.api.tokens.TokenFile) never sees half of it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Hashes are no secret, but nobody else needs to read who holds which scopes.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
