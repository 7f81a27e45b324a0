#!/usr/bin/env bash
# The failover benchmark, end to end, on a private broker (never the shared 127.0.0.1:19092:
# the benchmark deletes and recreates Cerebelum's topics before every run).
#
#   bench/failover/run.sh                                   # the full suite (~15 min)
#   bench/failover/run.sh --sizes 1000 --runs 1             # any bench.failover option
#
# Environment:
#   FAILOVER_ROOT          state of the private broker (default /tmp/cerebelum-failover-bench)
#   FAILOVER_KAFKA_PORT    its client port; the controller's is the next one (default 39092)
#   FAILOVER_KEEP_SERVICES 1 to leave the broker running afterwards
#
# Results: bench/failover/results/failover-<stamp>.json and .png; see README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROOT=${FAILOVER_ROOT:-/tmp/cerebelum-failover-bench}
PORT=${FAILOVER_KAFKA_PORT:-39092}
PY=.venv/bin/python

# Reuse the repo's downloaded Kafka jars rather than fetching them again.
if [ ! -e "$ROOT/.cache/kafka" ] && [ -d .cache/kafka ]; then
    mkdir -p "$ROOT/.cache"
    cp -a .cache/kafka "$ROOT/.cache/"
fi

# The dev broker, with group.min.session.timeout.ms lowered so a 3 s session timeout is allowed.
$PY -m bench.failover.broker up --root "$ROOT" --port "$PORT"

status=0
$PY -m bench.failover --bootstrap "127.0.0.1:$PORT" "$@" || status=$?

if [ "${FAILOVER_KEEP_SERVICES:-0}" != 1 ]; then
    $PY -m bench.failover.broker down --root "$ROOT" --port "$PORT"
fi
exit $status
