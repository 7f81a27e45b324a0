"""`cerebelum api`: serve the HTTP API with uvicorn."""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

from cerebelum.api import create_app
from cerebelum.config import Settings
from cerebelum.telemetry.logs import JSON


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("api", help="serve the HTTP API")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    app = create_app(settings)
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
