"""W3 as a Restate service, served over HTTP/2 by hypercorn (one process, as the SDK documents).

    python -m bench.compare.engines.restate_app --port 49080

Two shapes of the same three `ctx.run` steps: `W3` is a Restate workflow keyed by the execution
id (run once per id, result kept and attachable: the closest to a Cerebelum execution or a DBOS
workflow); `W3Service.run` is a plain durable service handler (no key, no kept result).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import restate
from hypercorn.asyncio import serve
from hypercorn.config import Config


async def step1(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"n": inputs["n"] + 1}


async def step2(step1: dict[str, Any]) -> dict[str, Any]:
    return {"n": step1["n"] * 2}


async def step3(step2: dict[str, Any]) -> dict[str, Any]:
    return step2


async def _w3(ctx: restate.Context, inputs: dict[str, Any]) -> dict[str, Any]:
    a = await ctx.run_typed("step1", step1, inputs=inputs)
    b = await ctx.run_typed("step2", step2, step1=a)
    return await ctx.run_typed("step3", step3, step2=b)


workflow = restate.Workflow("W3")
service = restate.Service("W3Service")


@workflow.main()
async def run(ctx: restate.WorkflowContext, inputs: dict[str, Any]) -> dict[str, Any]:
    return await _w3(ctx, inputs)


@service.handler("run")
async def run_service(ctx: restate.Context, inputs: dict[str, Any]) -> dict[str, Any]:
    return await _w3(ctx, inputs)


app = restate.app(services=[workflow, service])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    # The server multiplexes every invocation on few HTTP/2 connections; hypercorn's default of
    # 100 streams per connection would queue invocations (the SDK's own test harness lifts it).
    config.h2_max_concurrent_streams = 2**31 - 1
    config.accesslog = None
    # The server holds its HTTP/2 connections open: on SIGTERM close them after 1 s, not 60.
    config.graceful_timeout = 1.0
    asyncio.run(_serve(config))


async def _serve(config: Config) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait)


if __name__ == "__main__":
    main()
