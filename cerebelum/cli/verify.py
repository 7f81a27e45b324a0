"""`cerebelum verify [--since-ms MS] [--no-db] [--json]`: check the invariants on the real data.

Exit code 0 when nothing was found, 1 on any finding, 2 when Kafka or PostgreSQL could not be
read (nothing was verified).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import asyncpg
import orjson
from aiokafka.errors import KafkaError

from cerebelum.admin.scan import verify
from cerebelum.admin.verify import Report
from cerebelum.config import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "verify",
        help="check every execution's history and every acknowledged start-command",
        description="Read cerebelum.events (read_committed, to the end offsets taken at start) "
        "and report any execution with a version gap, a duplicate version, two different "
        "events with one version, a step result recorded twice, or a first event other than "
        "ExecutionStarted, or events of one id on two partitions; read cerebelum.commands and "
        "cerebelum.dlq and report any processed start-command with no execution and not in the "
        "DLQ, any processed command off its id's home partition and not in the DLQ, and any "
        "command on a partition past the 64 the workers serve (commands the workers have not "
        "processed yet are counted as pending, not reported); compare PostgreSQL's rows with "
        "Kafka for the executions the mirror has caught up with. Exit code 1 on any finding.",
    )
    p.add_argument(
        "--since-ms",
        type=int,
        metavar="EPOCH_MS",
        help="only commands and events with a timestamp at or after this (epoch ms); "
        "histories begun earlier are checked from the first version read",
    )
    p.add_argument("--no-db", action="store_true", help="do not compare with PostgreSQL")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--examples", type=int, default=20, metavar="N", help="findings listed in full (default 20)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    progress = None if args.quiet else _progress
    try:
        report = asyncio.run(
            verify(Settings.from_env(), since_ms=args.since_ms, use_db=not args.no_db,
                   progress=progress)
        )  # fmt: skip
    except (KafkaError, OSError, TimeoutError, asyncpg.PostgresError) as exc:
        print(f"error: verification could not read its sources: {exc!r}", file=sys.stderr)
        return 2
    if args.json:
        print(orjson.dumps(report.as_dict(args.examples), option=orjson.OPT_INDENT_2).decode())
    else:
        print(format_report(report, args.examples, time.monotonic() - started))
    return 1 if report.findings else 0


def _progress(topic: str, done: int, total: int) -> None:
    percent = 100 * done / total if total else 100.0
    print(f"  reading {topic}: {percent:.0f}% ({done} of {total} offsets)", file=sys.stderr)


def format_report(report: Report, examples: int, elapsed_s: float) -> str:
    c = report.commands
    lines = [
        f"checked {report.executions} executions ({report.events} events), "
        f"{c.starts} processed start-commands, {c.dead_lettered} dead-lettered commands "
        f"in {elapsed_s:.1f} s",
        f"pending (not processed yet, not checked): {c.pending} commands, "
        f"{c.pending_starts} of them start-commands",
    ]
    if report.compared or report.not_mirrored:
        lines.append(
            f"PostgreSQL: {report.compared} executions compared, "
            f"{report.not_mirrored} not mirrored yet"
        )
    lines.extend(f"note: {n}" for n in report.notes)
    if not report.findings:
        lines.append("OK: no findings")
        return "\n".join(lines)
    lines.append(f"FINDINGS: {len(report.findings)}")
    lines.extend(f"  {kind:<24} {n}" for kind, n in report.by_kind().items())
    shown = report.findings[:examples]
    if shown:
        lines.append(f"first {len(shown)}:")
    for f in shown:
        where = ""
        if f.partition is not None:
            where = f" [p{f.partition}" + ("]" if f.offset is None else f" @{f.offset}]")
        lines.append(f"  {f.kind:<24} {f.execution_id or '-'}{where}: {f.detail}")
    return "\n".join(lines)
