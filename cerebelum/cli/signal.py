"""`cerebelum signal ID NAME [--payload JSON]`, `cerebelum cancel ID [--reason TEXT]` and
`cerebelum complete TOKEN (--result JSON | --error TYPE [--message TEXT])`.

Refused at once, before anything is produced: an id or signal name outside the id alphabet
(exit 2); an execution PostgreSQL shows as ended, or one it does not have once the mirror has
caught up on its partition (exit 1). Kafka away: one line on stderr, exit 1, within --timeout.
"""

from __future__ import annotations

import argparse

import orjson

from cerebelum.cli._commands import (
    EXIT_USAGE,
    add_timeout,
    bad_ids,
    fail,
    quiet,
    run_command,
    send_to,
)
from cerebelum.client import Client
from cerebelum.core.commands import parse_completion_token


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser(
        "signal",
        help="send a signal (an approval, any external event) to an execution",
        description="Produce a SendSignal command to cerebelum.commands. A signal that arrives "
        "before the execution waits for it is kept until it does. A signal for an execution "
        "that has ended, or that does not exist, is refused.",
    )
    s.add_argument("execution_id")
    s.add_argument("name", help="the signal's name, e.g. approval")
    s.add_argument("--payload", default="null", help="the payload, as JSON (default null)")
    add_timeout(s)
    s.set_defaults(func=run_signal)
    c = sub.add_parser(
        "cancel",
        help="cancel an execution",
        description="Produce a CancelExecution command: the execution records the reason, runs "
        "no further step, and its timers are dropped. An execution that has ended, or that "
        "does not exist, is refused.",
    )
    c.add_argument("execution_id")
    c.add_argument("--reason", default="cancelled from the CLI")
    add_timeout(c)
    c.set_defaults(func=run_cancel)
    d = sub.add_parser(
        "complete",
        help="complete a step that waits for an outside system (ctx.pending())",
        description="Produce a CompleteStep command: the step that handed out TOKEN (its "
        "ctx.completion_token) completes with --result, or fails with --error (its retry "
        "policy and diverge rules apply). Recorded once: a second completion, or one for an "
        "earlier run, is refused (dead-lettered).",
    )
    d.add_argument("token", help="the completion token: execution/step/number")
    outcome = d.add_mutually_exclusive_group(required=True)
    outcome.add_argument("--result", help="the step's result, as JSON")
    outcome.add_argument("--error", metavar="TYPE", help="fail the step with this error type")
    d.add_argument("--message", default="", help="the error's message (with --error)")
    add_timeout(d)
    d.set_defaults(func=run_complete)


def run_signal(args: argparse.Namespace) -> int:
    quiet(args)
    code = bad_ids((args.execution_id, "execution_id"), (args.name, "signal"))
    if code is not None:
        return code
    try:
        payload = orjson.loads(args.payload)
    except orjson.JSONDecodeError as exc:
        return fail(f"--payload is not valid JSON: {exc}", EXIT_USAGE)
    code = run_command(
        send_to(args, lambda client: client.signal(args.execution_id, args.name, payload))
    )
    if code == 0:
        print(f"signal {args.name!r} sent to {args.execution_id}")
    return code


def run_cancel(args: argparse.Namespace) -> int:
    quiet(args)
    code = bad_ids((args.execution_id, "execution_id"))
    if code is not None:
        return code
    code = run_command(send_to(args, lambda client: client.cancel(args.execution_id, args.reason)))
    if code == 0:
        print(f"cancel sent to {args.execution_id}")
    return code


def run_complete(args: argparse.Namespace) -> int:
    quiet(args)
    try:
        execution_id, step, _ = parse_completion_token(args.token)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    error = None
    result = None
    if args.error is not None:
        error = {"type": args.error, "message": args.message}
    else:
        try:
            result = orjson.loads(args.result)
        except orjson.JSONDecodeError as exc:
            return fail(f"--result is not valid JSON: {exc}", EXIT_USAGE)
    args.execution_id = execution_id

    async def send(client: Client) -> None:
        await client.complete(args.token, result, error=error)

    code = run_command(send_to(args, send))
    if code == 0:
        what = f"error {args.error!r}" if error else "result"
        print(f"step {step!r} of {execution_id}: {what} sent")
    return code
