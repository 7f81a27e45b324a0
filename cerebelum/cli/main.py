"""`cerebelum`: the command line. Each sub-command lives in its own module with `register`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from cerebelum.config import Settings
from cerebelum.telemetry.logs import configure_logging

# Sub-command modules, in the order `--help` lists them.
COMMANDS = (
    "worker",
    "mirror",
    "api",
    "start",
    "signal",
    "status",
    "executions",
    "dlq",
    "schedule",
    "workflows",
    "cluster",
    "verify",
    "topics",
    "db",
    "dev",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cerebelum",
        description="Cerebelum: durable Python workflows on Kafka partitions.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--namespace",
        metavar="NAME",
        help="the namespace to act in: its topics, groups and schema (default: "
        "$CEREBELUM_NAMESPACE, else 'default')",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"cerebelum.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"cerebelum.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.namespace is not None:
        # The CLI is the edge: every sub-command builds its Settings from the environment,
        # and so do the processes it starts (`cerebelum dev`), so the option goes there.
        os.environ["CEREBELUM_NAMESPACE"] = args.namespace
    try:
        log_format = Settings.from_env().log_format
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(log_format, args.verbose)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
