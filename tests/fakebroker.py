"""A Kafka broker that cannot allocate a producer id, for tests of bounded waits.

It answers ApiVersions and Metadata (so a client bootstraps), and every InitProducerId with
COORDINATOR_NOT_AVAILABLE, as a real broker does while it cannot allocate producer ids (its
controller or transaction log is unavailable). An idempotent producer then retries forever:
the case where a command used to hang with no timeout. Any other request is never answered.

    with fake_broker() as address:      # "127.0.0.1:PORT", served from a thread
        ...

`silent_broker()` is a port that accepts connections and never answers.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiokafka.protocol.admin import ApiVersionResponse_v0
from aiokafka.protocol.metadata import MetadataResponse_v0
from aiokafka.protocol.transaction import InitProducerIdResponse_v0

API_METADATA = 3
API_VERSIONS = 18
API_INIT_PRODUCER_ID = 22
COORDINATOR_NOT_AVAILABLE = 15


@contextmanager
def fake_broker() -> Iterator[str]:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def serve(conn: socket.socket) -> None:
        with conn:
            while not stop.is_set():
                size = _read(conn, 4)
                if size is None:
                    return
                request = _read(conn, struct.unpack(">i", size)[0])
                if request is None:
                    return
                api_key, _version, correlation_id = struct.unpack(">hhi", request[:8])
                body = _answer(api_key, port)
                if body is None:
                    continue  # never answered
                frame = struct.pack(">i", correlation_id) + body
                conn.sendall(struct.pack(">i", len(frame)) + frame)

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=serve, args=(conn,), daemon=True)
            threads.append(thread)
            thread.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop.set()
        acceptor.join()
        server.close()


@contextmanager
def silent_broker() -> Iterator[str]:
    """A port that accepts connections and never answers a byte (a hung broker)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        acceptor.join()
        server.close()
        for conn in held:
            conn.close()


def _answer(api_key: int, port: int) -> bytes | None:
    if api_key == API_VERSIONS:
        versions = [(API_METADATA, 0, 0), (API_VERSIONS, 0, 0), (API_INIT_PRODUCER_ID, 0, 0)]
        return bytes(ApiVersionResponse_v0(0, versions).encode())
    if api_key == API_METADATA:
        return bytes(MetadataResponse_v0([(0, "127.0.0.1", port)], []).encode())
    if api_key == API_INIT_PRODUCER_ID:
        return bytes(InitProducerIdResponse_v0(0, COORDINATOR_NOT_AVAILABLE, -1, -1).encode())
    return None


def _read(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            chunk = conn.recv(n - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data
