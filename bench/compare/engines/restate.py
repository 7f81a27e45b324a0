"""Restate: restate-server (npm @restatedev/restate-server) and W3 in its Python SDK (restate-sdk)
behind hypercorn, every process inside one private network namespace (bench/compare/netns.py).

Up, in order:
    1. create the namespace (loopback only: the server cannot reach the internet it tries);
    2. start restate-server with a fresh data directory and our ports (config written per run;
       telemetry off), and the SDK service (bench/compare/engines/restate_app.py);
    3. inside the namespace, `python -m bench.compare.engines.restate register`: wait for the
       admin and ingress health checks, register the SDK service as a deployment, and call W3
       until a call succeeds (the partition processors take a moment to lead).
The generator runs inside the namespace too and calls the ingress through the SDK's own client
(a lean HTTP/1.1 client by default, the SDK's own httpx-based one with --restate-client sdk):
one call per execution, which returns when the invocation completed.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from bench.common.base import ROOT, say
from bench.common.processes import Proc
from bench.common.procfs import Tracked
from bench.compare.engines import Engine, EngineClient
from bench.compare.engines.http1 import Http1Pool
from bench.compare.netns import NetNamespace

# Where `python -m bench.compare.install` puts the npm package (pinned in
# bench/compare/restate/package.json and its lock file).
NPM_PREFIX = ROOT / ".cache" / "compare" / "restate"
DATA_DIR = ROOT / ".cache" / "compare" / "restate-data"
# Inside the private namespace nobody else listens, so any ports do; these are off Restate's
# defaults (8080, 9070, 5122, 9080) only so a log cannot be mistaken for another server's.
INGRESS_PORT = 48080
ADMIN_PORT = 49070
NODE_PORT = 45122
SDK_PORT = 49080
# A cold restate-server provisions its partitions in a few seconds; 120 s covers a loaded box.
READY_TIMEOUT_S = 120.0
# The server stops within a second of SIGTERM; past this it is killed (nothing to keep).
STOP_TIMEOUT_S = 15.0
SERVICE_STOP_TIMEOUT_S = 3.0
# HTTP/2 allows many streams per connection: a handful of connections carry thousands of
# executions in flight. Over HTTP/1.1 each execution in flight holds a connection of its own.
CLIENT_MAX_CONNECTIONS = 64

# generic_call sends bytes as they are; the handler takes JSON and says so in its contract.
JSON = {"content-type": "application/json"}

SERVER_CONFIG = """\
# Written by bench/compare for one run.
disable-telemetry = true
listen-mode = "tcp"
log-disable-ansi-codes = true
bind-address = "127.0.0.1:{node}"
advertised-address = "http://127.0.0.1:{node}/"

[ingress]
bind-address = "127.0.0.1:{ingress}"

[admin]
bind-address = "127.0.0.1:{admin}"
"""


def server_binary() -> Path:
    arch = {"x86_64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "x64")
    system = "darwin" if sys.platform == "darwin" else "linux"
    path = (
        NPM_PREFIX / "node_modules" / "@restatedev" / f"restate-server-{system}-{arch}" / "bin"
        / "restate-server"
    )  # fmt: skip
    if not path.exists():
        raise SystemExit(f"no {path}: run `python -m bench.compare.install` first")
    return path


class RestateEngine(Engine):
    kind = "restate"

    def __init__(self, handler_kind: str = "workflow", client: str = "lean") -> None:
        self.name = "restate"
        self.handler_kind = handler_kind
        self.client = client
        self.ns: NetNamespace | None = None
        self.server: Proc | None = None
        self.service: Proc | None = None

    def up(self, logs: Path) -> None:
        binary = server_binary()
        shutil.rmtree(DATA_DIR, ignore_errors=True)
        DATA_DIR.mkdir(parents=True)
        logs.mkdir(parents=True, exist_ok=True)
        config = logs / "restate.toml"
        config.write_text(
            SERVER_CONFIG.format(node=NODE_PORT, ingress=INGRESS_PORT, admin=ADMIN_PORT)
        )
        self.ns = NetNamespace()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.server = Proc(
            "restate-server",
            self.ns.wrap([str(binary), "--config-file", str(config), "--base-dir", str(DATA_DIR),
                          "--node-name", "bench", "--no-logo"]),
            logs / "restate-server.log", env,
        )  # fmt: skip
        self.service = Proc(
            "sdk-service",
            self.ns.wrap([sys.executable, "-m", "bench.compare.engines.restate_app",
                          "--port", str(SDK_PORT)]),
            logs / "sdk-service.log", env,
        )  # fmt: skip
        started = time.monotonic()
        result = subprocess.run(
            self.ns.wrap([sys.executable, "-m", "bench.compare.engines.restate", "register"]),
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=READY_TIMEOUT_S + 30,
        )  # fmt: skip
        (logs / "register.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise RuntimeError(f"Restate did not come up: see {logs}/register.log")
        say(f"restate up in {time.monotonic() - started:.1f} s (inside netns {self.ns.path})")

    def tracked(self) -> list[Tracked]:
        assert self.server is not None and self.service is not None
        return [
            Tracked("restate-server", self.server.pid),
            Tracked("sdk-service", self.service.pid),
        ]

    def driver_argv(self, base: list[str]) -> list[str]:
        assert self.ns is not None
        config = {
            "ingress": f"http://127.0.0.1:{INGRESS_PORT}",
            "handler": self.handler_kind,
            "client": self.client,
        }
        return self.ns.wrap([*base, "--config", orjson.dumps(config).decode()])

    def down(self) -> None:
        # The server first: it holds the HTTP/2 connections the SDK service would wait on.
        if self.server is not None:
            self.server.stop(STOP_TIMEOUT_S)
        if self.service is not None:
            # hypercorn can hang in its shutdown when its peer went first (a KeyError in its h2
            # protocol); it keeps no state, so it is not waited for long.
            self.service.stop(SERVICE_STOP_TIMEOUT_S)
        if self.ns is not None:
            self.ns.close()
        self.ns = self.server = self.service = None

    def describe(self) -> dict[str, Any]:
        version = subprocess.run(
            [str(server_binary()), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        return {
            "server": version,
            "restate-sdk": metadata.version("restate-sdk"),
            "hypercorn": metadata.version("hypercorn"),
            "httpx": metadata.version("httpx"),
            "handler": self.handler_kind,
            "client": self.client,
            "server_config": "defaults (24 partitions, RocksDB WAL fsync on) with our ports and "
            "telemetry off",
            "processes": "restate-server, one hypercorn process serving the SDK service",
        }


class Client(EngineClient):
    """One ingress call per execution: POST /W3/{id}/run (a workflow keyed by the execution id)
    or POST /W3Service/run; the call returns the handler's output when the invocation ends.

    `lean` (default): a minimal HTTP/1.1 keep-alive client (engines/http1.py), which costs the
    generator a tenth of httpx's CPU; `sdk`: the SDK's own client (`restate.client` over httpx,
    HTTP/2, as `restate.create_client` sets it up); `sdk-http1`: the same over HTTP/1.1."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.ingress = config["ingress"]
        self.handler = config.get("handler", "workflow")
        self.kind = config.get("client", "lean")
        self._lean: Http1Pool | None = None
        self._http: Any = None
        self._client: Any = None

    async def connect(self) -> None:
        if self.kind == "lean":
            host, port = self.ingress.removeprefix("http://").split(":")
            self._lean = Http1Pool(host, int(port))
            return
        import httpx
        from restate.client import Client as RestateClient

        http2 = self.kind == "sdk"
        self._http = httpx.AsyncClient(
            base_url=self.ingress,
            http2=http2,
            limits=httpx.Limits(max_connections=CLIENT_MAX_CONNECTIONS if http2 else 1000),
            # No read timeout: the generator applies its own to every execution.
            timeout=httpx.Timeout(None, connect=10.0),
        )
        self._client = RestateClient(self._http)

    async def close(self) -> None:
        if self._lean is not None:
            await self._lean.close()
        if self._http is not None:
            await self._http.aclose()

    async def execute(self, execution_id: str, i: int) -> Any:
        body = orjson.dumps({"n": i})
        workflow = self.handler == "workflow"
        if self._lean is not None:
            path = f"/W3/{execution_id}/run" if workflow else "/W3Service/run"
            return orjson.loads(await self._lean.post(path, body))
        if workflow:
            out = await self._client.generic_call("W3", "run", body, key=execution_id, headers=JSON)
        else:
            out = await self._client.generic_call("W3Service", "run", body, headers=JSON)
        return orjson.loads(out)


def register() -> None:
    """Inside the namespace: wait for the server, register the SDK service, call W3 once."""
    import httpx

    admin = f"http://127.0.0.1:{ADMIN_PORT}"
    ingress = f"http://127.0.0.1:{INGRESS_PORT}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    step = "admin health"
    with httpx.Client(timeout=5.0) as http:
        while True:
            try:
                if step == "admin health":
                    http.get(f"{admin}/health").raise_for_status()
                    step = "ingress health"
                if step == "ingress health":
                    http.get(f"{ingress}/restate/health").raise_for_status()
                    step = "register"
                if step == "register":
                    response = http.post(
                        f"{admin}/deployments",
                        json={"uri": f"http://127.0.0.1:{SDK_PORT}", "force": True},
                    )
                    response.raise_for_status()
                    print(f"registered: {response.text}", flush=True)
                    step = "first call"
                if step == "first call":
                    response = http.post(f"{ingress}/W3Service/run", json={"n": 1}, timeout=30)
                    response.raise_for_status()
                    print(f"first call: {response.text}", flush=True)
                    return
            except httpx.HTTPError as exc:
                if time.monotonic() > deadline:
                    raise SystemExit(f"Restate not ready at step {step!r}: {exc!r}") from None
                time.sleep(0.2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Restate helpers run inside the namespace")
    parser.add_argument("action", choices=["register"])
    parser.parse_args()
    register()
