#!/usr/bin/env bash
# The faust spike, end to end, on a private broker (never the shared 127.0.0.1:19092).
# See docs/faust-spike.md for what it measures and the results. Takes ~25 minutes on 2 cores.
#
#   bench/faust_spike/run.sh            # from the repo root
#
# Needs: the project's venv (.venv), and faust-streaming 0.15.3 in its own venv:
#   python3 -m venv /tmp/spike/venv-faust
#   /tmp/spike/venv-faust/bin/pip install faust-streaming==0.15.3 orjson==3.13.0
set -euo pipefail
cd "$(dirname "$0")/../.."

ROOT=${SPIKE_ROOT:-/tmp/spike}
PORT=${SPIKE_KAFKA_PORT:-29092}
PY=.venv/bin/python
RUN="$PY bench/faust_spike/run.py --bootstrap 127.0.0.1:$PORT --broker-pid-file $ROOT/.dev/kafka/kafka.pid"

# Private services: their own root (.cache/.dev), ports and data.
$PY -m cerebelum.cli.dev up --root "$ROOT" --kafka-port "$PORT" \
    --kafka-controller-port $((PORT + 1)) --postgres-port 25432

# A throw-away run first: the broker's JIT warms up (the first run on a fresh JVM is ~5x slower).
$RUN throughput --engine cerebelum --runs 1 -n 5000 --first-index 0

# Throughput: 1 worker process, 3 runs each, median reported.
$RUN throughput --engine cerebelum    --runs 3 -n 20000
$RUN throughput --engine faust-inline --runs 3 -n 20000
$RUN throughput --engine faust-loop   --runs 3 -n 5000   # ~4x slower: N cut to 5,000

# Kill test: 2 workers, 5,000 executions, kill -9 one after a third completed.
$RUN kill --engine cerebelum    --runs 2 -n 5000 --timeout 120
$RUN kill --engine faust-inline --runs 2 -n 5000 --timeout 120
$RUN kill --engine faust-loop   --runs 1 -n 5000 --timeout 120

if [ "${SPIKE_KEEP_SERVICES:-0}" != 1 ]; then
    $PY -m cerebelum.cli.dev down --root "$ROOT"
fi
