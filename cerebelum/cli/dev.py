"""`cerebelum dev up|down|status|reset`: the local Kafka broker and PostgreSQL server.

Registered into the main CLI by `register(subparsers)`; also runnable alone as
`python -m cerebelum.cli.dev up` (what scripts/bootstrap.sh does, before the CLI is installed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cerebelum.dev import DevServiceError, services


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dev` and its sub-commands; each sets `func(args) -> exit code`."""
    dev = subparsers.add_parser(
        "dev",
        help="run a local Kafka broker and PostgreSQL server for development and tests",
        description="Local services run from the repo: state in .dev/, downloads in .cache/.",
    )
    dev.set_defaults(func=lambda args: _usage(dev))
    commands = dev.add_subparsers(title="commands", metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="start Kafka and PostgreSQL (a no-op for those already running)",
        description="Fetch Kafka's jars and PostgreSQL if needed, start both, print the endpoints.",
    )
    _add_root(up)
    # Overrides for when another program holds the defaults; remembered in .dev/ports.json.
    up.add_argument("--kafka-port", type=int, help="Kafka client port (default 19092)")
    up.add_argument(
        "--kafka-controller-port", type=int, help="KRaft controller port (default 19093)"
    )
    up.add_argument("--postgres-port", type=int, help="PostgreSQL port (default 15432)")
    up.set_defaults(func=_up)

    down = commands.add_parser(
        "down",
        help="stop both services, keeping their data",
        description="Stop Kafka, then PostgreSQL.",
    )
    _add_root(down)
    down.set_defaults(func=_down)

    status = commands.add_parser(
        "status",
        help="show whether each service runs, with pids, endpoints and log files",
        description="Print the services' state as JSON; exit 0 only if both are running.",
    )
    _add_root(status)
    status.set_defaults(func=_status)

    reset = commands.add_parser(
        "reset",
        help="stop both services and delete all their data (.dev/)",
        description="Stop both services and delete .dev/; the downloaded jars in .cache/ stay.",
    )
    _add_root(reset)
    reset.set_defaults(func=_reset)


def _add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root", type=Path, help="repo root (default: the folder with pyproject.toml)"
    )


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _up(args: argparse.Namespace) -> int:
    root = (args.root or services.find_root()).resolve()
    saved = services.saved_ports(root)
    ports = services.Ports(
        kafka_port=args.kafka_port or saved.kafka_port,
        kafka_controller_port=args.kafka_controller_port or saved.kafka_controller_port,
        postgres_port=args.postgres_port or saved.postgres_port,
    )
    return _guarded(lambda: services.up(root, ports))


def _down(args: argparse.Namespace) -> int:
    return _guarded(lambda: services.down(args.root))


def _status(args: argparse.Namespace) -> int:
    state = services.status(args.root)
    print(json.dumps(state, indent=2))
    running = all(service["running"] for service in state.values() if isinstance(service, dict))
    return 0 if running else 1


def _reset(args: argparse.Namespace) -> int:
    return _guarded(lambda: services.reset(args.root))


def _guarded(action: Callable[[], object]) -> int:
    try:
        action()
    except DevServiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry: `python -m cerebelum.cli.dev up`."""
    parser = argparse.ArgumentParser(prog="cerebelum")
    subparsers = parser.add_subparsers(required=True, metavar="COMMAND")
    register(subparsers)
    # Alone, `dev` is implied: `python -m cerebelum.cli.dev up` means `cerebelum dev up`.
    args = parser.parse_args(["dev", *(argv if argv is not None else sys.argv[1:])])
    exit_code: int = args.func(args)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
