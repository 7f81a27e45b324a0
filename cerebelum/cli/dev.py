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

from cerebelum.dev import DevServiceError, cluster, services


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

    _register_cluster(commands)


def _register_cluster(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser(
        "cluster",
        help="run a local Kafka cluster of 3 KRaft nodes for replication and fault drills",
        description="A cluster of N combined broker+controller nodes (default 3) on 127.0.0.1, "
        "state in .dev/kafka-cluster/. Client ports are BASE..BASE+N-1, controller ports "
        "BASE+N..BASE+2N-1. Internal topics get replication factor 3 and min ISR 2; create "
        "Cerebelum's with `cerebelum topics apply --replication-factor 3` (min ISR 2). "
        "Independent of `dev up`'s single broker.",
    )
    group.set_defaults(func=lambda args: _usage(group))
    actions = group.add_subparsers(title="commands", metavar="COMMAND")
    up = actions.add_parser(
        "up",
        help="start the nodes not running; print the bootstrap list",
        description="Start the cluster's nodes (fetching the jars once), wait until every "
        "broker is registered, print CEREBELUM_KAFKA.",
    )
    _add_root(up)
    up.add_argument(
        "--base-port",
        type=int,
        help=f"first client port (default {cluster.DEFAULT_BASE_PORT}, or the last up's)",
    )
    up.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    up.add_argument(
        "--heap", default=cluster.NODE_HEAP, help=f"JVM heap per node (default {cluster.NODE_HEAP})"
    )
    up.set_defaults(func=_cluster_up)
    for name, helptext, func in (
        ("down", "stop every node, keeping their data", _cluster_down),
        ("status", "show each node's state as JSON; exit 0 if all run", _cluster_status),
        ("kill", "kill -9 one node (a crash drill); `up` starts it again", _cluster_kill),
    ):
        action = actions.add_parser(name, help=helptext, description=helptext)
        _add_root(action)
        if name == "kill":
            action.add_argument("node", type=int, help="node id (1..N)")
        action.set_defaults(func=func)


def _cluster_state(root: Path) -> Path:
    return root / ".dev" / "kafka-cluster"


def _cluster_up(args: argparse.Namespace) -> int:
    root = (args.root or services.find_root()).resolve()
    saved = cluster.load(root, _cluster_state(root))
    if args.nodes < 1:
        print("error: --nodes must be at least 1", file=sys.stderr)
        return 2
    base = args.base_port or (saved.ports[0][0] if saved else cluster.DEFAULT_BASE_PORT)
    nodes = cluster.Cluster.on_ports(root, _cluster_state(root), base, args.nodes, args.heap)

    def up() -> None:
        cluster.save(nodes)
        cluster.start(nodes)
        print(f"CEREBELUM_KAFKA={nodes.bootstrap}")

    return _guarded(up)


def _saved_cluster(args: argparse.Namespace) -> cluster.Cluster | None:
    root = (args.root or services.find_root()).resolve()
    saved = cluster.load(root, _cluster_state(root))
    if saved is None:
        print(f"no cluster was started in {_cluster_state(root)}", file=sys.stderr)
    return saved


def _cluster_down(args: argparse.Namespace) -> int:
    saved = _saved_cluster(args)
    return 1 if saved is None else _guarded(lambda: cluster.stop(saved))


def _cluster_status(args: argparse.Namespace) -> int:
    saved = _saved_cluster(args)
    if saved is None:
        return 1
    state = cluster.status(saved)
    print(json.dumps(state, indent=2))
    nodes = state["nodes"]
    assert isinstance(nodes, dict)
    return 0 if all(node["running"] for node in nodes.values()) else 1


def _cluster_kill(args: argparse.Namespace) -> int:
    saved = _saved_cluster(args)
    if saved is None:
        return 1
    if not 1 <= args.node <= len(saved.ports):
        print(f"error: node must be 1..{len(saved.ports)}", file=sys.stderr)
        return 2
    return _guarded(lambda: print(f"killed pid {cluster.kill_node(saved, args.node)}"))


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
