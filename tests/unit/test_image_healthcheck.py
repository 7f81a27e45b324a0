"""deploy/docker/healthcheck.py, the image's HEALTHCHECK and compose's health checks, run as
Docker runs it (a process; its exit code is the verdict) against a local HTTP server."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "healthcheck.py"

# path -> status the fake process answers
ANSWERS = {"/healthz": 200, "/readyz": 503}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        status = ANSWERS.get(self.path, 404)
        body = b'{"status": "ok"}' if status == 200 else b'{"status": "unavailable"}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def free_port() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    number = server.server_address[1]
    server.server_close()
    return number


def check(*urls: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *urls],
        capture_output=True, text=True, timeout=30, env=env or {},
    )  # fmt: skip


def test_a_url_that_answers_200_is_healthy(port: int) -> None:
    result = check(f"http://127.0.0.1:{port}/healthz")
    assert result.returncode == 0, result.stdout


def test_a_503_is_unhealthy_and_says_why(port: int) -> None:
    result = check(f"http://127.0.0.1:{port}/readyz")
    assert result.returncode == 1
    assert "503" in result.stdout and "unavailable" in result.stdout


def test_nothing_listening_is_unhealthy() -> None:
    result = check(f"http://127.0.0.1:{free_port()}/healthz")
    assert result.returncode == 1


def test_every_url_given_must_answer(port: int) -> None:
    assert check(f"http://127.0.0.1:{port}/healthz", f"http://127.0.0.1:{port}/readyz").returncode
    assert not check(
        f"http://127.0.0.1:{port}/healthz", f"http://127.0.0.1:{port}/healthz"
    ).returncode


def test_without_urls_the_process_own_port_is_found(port: int) -> None:
    # A mirror: the worker's port is closed, the mirror's answers.
    env = {"CEREBELUM_WORKER_HTTP_PORT": str(free_port()), "CEREBELUM_MIRROR_HTTP_PORT": str(port)}
    assert check(env=env).returncode == 0


def test_without_urls_it_asks_the_image_ports_in_turn() -> None:
    spec = importlib.util.spec_from_file_location("healthcheck", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    image = {"CEREBELUM_WORKER_HTTP_PORT": "9100", "CEREBELUM_MIRROR_HTTP_PORT": "9101"}
    assert module.default_urls(image) == [
        "http://127.0.0.1:9100/healthz",
        "http://127.0.0.1:9101/healthz",
        "http://127.0.0.1:8080/healthz",
    ]
    # Unset or 0 (a free port, unknown here): not asked.
    assert module.default_urls({"CEREBELUM_WORKER_HTTP_PORT": "0"}) == [
        "http://127.0.0.1:8080/healthz"
    ]
