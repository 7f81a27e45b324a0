"""A private broker for the benchmark: the dev broker, plus short session timeouts allowed.

Kafka refuses a consumer whose session timeout is under the broker's
`group.min.session.timeout.ms` (6 s by default; the join fails with InvalidSessionTimeoutError),
and that setting cannot be changed at run time. The project's dev broker keeps the default, so
this starts the same broker (cerebelum.dev.kafka, same jars and layout) with the minimum
lowered, to measure a 3 s session timeout. Nothing in cerebelum/ changes.

    .venv/bin/python -m bench.failover.broker up   --root /tmp/cerebelum-failover-bench --port 39092
    .venv/bin/python -m bench.failover.broker down --root /tmp/cerebelum-failover-bench --port 39092
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cerebelum.dev import kafka

# Low enough for a 1 s session timeout; the benchmark measures 3 s.
MIN_SESSION_TIMEOUT_MS = 1_000
SETTING = f"group.min.session.timeout.ms={MIN_SESSION_TIMEOUT_MS}"

_server_properties = kafka._server_properties


def _with_short_sessions(layout: kafka.KafkaLayout) -> str:
    return _server_properties(layout) + SETTING + "\n"


def up(layout: kafka.KafkaLayout) -> None:
    if kafka.is_running(layout) and SETTING not in layout.server_properties.read_text():
        kafka.say("restarting the broker to allow short session timeouts")
        kafka.stop(layout)
    kafka._server_properties = _with_short_sessions  # read by write_config on start
    kafka.start(layout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.failover.broker")
    p.add_argument("action", choices=("up", "down"))
    p.add_argument(
        "--root", type=Path, required=True, help="state in ROOT/.dev, jars in ROOT/.cache"
    )
    p.add_argument("--port", type=int, required=True, help="client port; the controller's is +1")
    args = p.parse_args(argv)
    layout = kafka.KafkaLayout(args.root, port=args.port, controller_port=args.port + 1)
    if args.action == "up":
        up(layout)
        print(f"CEREBELUM_KAFKA={layout.bootstrap}")
    else:
        kafka.stop(layout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
