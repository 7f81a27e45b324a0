"""A private network namespace with only the loopback device up.

restate-server tries to reach the internet when it starts; the benchmark box must not. Every
Restate process (the server, the SDK service, the generator that calls it) runs inside one new
namespace, where 127.0.0.1 is private to them and nothing else is routable.

The namespace is held open by an anchor process (`unshare -n`, then `sleep`); the others join it
with `nsenter --net=/proc/ANCHOR/ns/net`, which calls setns(2) and then execs the command, so
the pid the harness sees is the command's own and /proc gives its CPU. The namespace goes away
with its last process: nothing is left behind if the harness dies.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

# Creating a namespace and bringing lo up takes milliseconds; 10 s means something is wrong.
ANCHOR_TIMEOUT_S = 10.0


class NetNamespace:
    """`unshare -n` anchored by a sleeping process; `wrap(argv)` runs argv inside it."""

    def __init__(self) -> None:
        script = "ip link set lo up && echo up && exec sleep infinity"
        self.anchor = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c", script],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        assert self.anchor.stdout is not None
        line = self.anchor.stdout.readline().strip()
        if line != "up":
            self.close()
            raise RuntimeError(
                "could not create a network namespace (unshare --net needs root or user "
                f"namespaces): anchor said {line!r}"
            )

    @property
    def path(self) -> Path:
        return Path(f"/proc/{self.anchor.pid}/ns/net")

    def wrap(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def close(self) -> None:
        if self.anchor.poll() is None:
            self.anchor.terminate()
            try:
                self.anchor.wait(ANCHOR_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.anchor.kill()
                self.anchor.wait()
