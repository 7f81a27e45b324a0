#!/usr/bin/env python3
"""The image's health check: exit 0 if a Cerebelum endpoint answers 200, 1 otherwise.

    cerebelum-healthcheck                       any of this container's /healthz endpoints
    cerebelum-healthcheck URL [URL ...]         these, all of which must answer 200

Without URLs it asks, on 127.0.0.1, the worker's port (CEREBELUM_WORKER_HTTP_PORT, 9100 in the
image), the mirror's (CEREBELUM_MIRROR_HTTP_PORT, 9101) and the API's (8080, `cerebelum api`'s
default; an API on another --port passes its URL): one image runs every role, and a container
runs one of them, so the first that answers 200 is the process's own. A worker or mirror
answers /healthz while its event loop runs; the API while Kafka and PostgreSQL answer it.

Standard library only: it runs every few seconds and must start fast.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

# Docker's own timeout for a check is 5 s (the Dockerfile's HEALTHCHECK --timeout); each URL
# gets less, so a hung port still leaves time to ask the others.
TIMEOUT_S = 2.0


def default_urls(env: dict[str, str]) -> list[str]:
    ports = [
        env.get("CEREBELUM_WORKER_HTTP_PORT", "").strip(),
        env.get("CEREBELUM_MIRROR_HTTP_PORT", "").strip(),
        "8080",
    ]
    return [f"http://127.0.0.1:{port}/healthz" for port in ports if port and port != "0"]


def answers_ok(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return response.status == 200, f"{url}: {response.status}"
    except urllib.error.HTTPError as exc:  # 503 and friends
        return False, f"{url}: {exc.code} {exc.read(300).decode('utf-8', 'replace')}"
    except (OSError, ValueError) as exc:  # refused, timed out, not a URL
        return False, f"{url}: {exc}"


def main(argv: list[str]) -> int:
    if argv:
        results = [answers_ok(url) for url in argv]
        ok = all(good for good, _ in results)
    else:
        results = []
        ok = False
        for url in default_urls(dict(os.environ)):
            good, line = answers_ok(url)
            results.append((good, line))
            if good:
                ok = True
                break
    for _, line in results:
        print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
