"""`cerebelum api`: serve the HTTP API with uvicorn."""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

from cerebelum.api import create_app
from cerebelum.config import Settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("api", help="serve the HTTP API")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    app = create_app(Settings.from_env())
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level)
    server = uvicorn.Server(config)
    server.run()
    # uvicorn sets `started` once listening; a lifespan failure (no database) never gets there.
    return 0 if server.started else 1
