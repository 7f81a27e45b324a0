"""`cerebelum topics apply`: create or check the declared topics."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from cerebelum.admin.topics import (
    DEFAULT_DECLARATIONS,
    TopicMismatch,
    apply_topics,
    load_declarations,
)
from cerebelum.config import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("topics", help="manage Cerebelum's Kafka topics")
    tsub = p.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    a = tsub.add_parser(
        "apply",
        help="create missing topics and check existing ones",
        description="Create the topics declared in topics/topics.json, named for the "
        "namespace (--namespace, CEREBELUM_NAMESPACE); a topic that exists with another "
        "partition count is an error.",
    )
    a.add_argument("--file", type=Path, default=DEFAULT_DECLARATIONS, help="declarations file")
    a.add_argument(
        "--replication-factor",
        type=int,
        help="override for every topic (on a cluster of three brokers or more: 3); sets "
        "min.insync.replicas to RF-1, at most 2, unless --min-insync-replicas says otherwise",
    )
    a.add_argument(
        "--min-insync-replicas",
        type=int,
        help="min.insync.replicas for every topic (only with --replication-factor)",
    )
    a.set_defaults(func=run_apply)


def run_apply(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.min_insync_replicas is not None and args.replication_factor is None:
        print("error: --min-insync-replicas needs --replication-factor", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(
            apply_topics(
                settings,
                load_declarations(args.file, settings.names),
                args.replication_factor,
                args.min_insync_replicas,
            )
        )
    except TopicMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in report:
        print(line)
    return 0
