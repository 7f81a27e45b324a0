#!/usr/bin/env bash
# The whole local cluster, without Docker, then the order example:
#   services (Kafka, PostgreSQL) -> topics -> migrations -> 3 workers, mirror, API -> example.
# Idempotent: processes already running are left alone. `bash scripts/cluster.sh down` stops all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

run_dir=.dev/cluster
mkdir -p "$run_dir"
processes=(worker-1 worker-2 worker-3 mirror api)

if [ "${1:-up}" = "down" ]; then
    for name in "${processes[@]}"; do
        pid=$(cat "$run_dir/$name.pid" 2>/dev/null || true)
        [ -n "$pid" ] && kill "$pid" 2>/dev/null && echo "stopped $name ($pid)"
        rm -f "$run_dir/$name.pid"
    done
    exec .venv/bin/python -m cerebelum dev down
fi

bash scripts/bootstrap.sh
export CEREBELUM_KAFKA=${CEREBELUM_KAFKA:-127.0.0.1:19092}
export CEREBELUM_DATABASE_URL=${CEREBELUM_DATABASE_URL:-postgresql://cerebelum@127.0.0.1:15432/cerebelum}
cli=.venv/bin/cerebelum

# The API wants a token: an admin token made once, its hash in the tokens file, the token itself
# in a file only this user reads (the example below and curl use it).
export CEREBELUM_API_TOKENS_FILE=${CEREBELUM_API_TOKENS_FILE:-$PWD/$run_dir/api-tokens}
if [ ! -s "$run_dir/api-token" ]; then
    (umask 077; $cli api token create --name cluster-admin --scopes admin \
        --file "$CEREBELUM_API_TOKENS_FILE" >"$run_dir/api-token")
fi
CEREBELUM_API_TOKEN=$(cat "$run_dir/api-token")
export CEREBELUM_API_TOKEN

echo "== topics"; $cli topics apply
echo "== migrations"; $cli db migrate

start() {
    local name=$1; shift
    local pid
    pid=$(cat "$run_dir/$name.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        echo "$name already running ($pid)"
        return
    fi
    nohup "$cli" "$@" >"$run_dir/$name.log" 2>&1 &
    echo $! >"$run_dir/$name.pid"
    echo "started $name ($!), log: $run_dir/$name.log"
}
echo "== processes"
for i in 1 2 3; do start "worker-$i" worker --app examples.app; done
start mirror mirror
start api api --port 8080

printf "waiting for the API"
for _ in $(seq 60); do
    .venv/bin/python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" 2>/dev/null && break
    printf "."; sleep 1
done
echo

echo "== example: examples/order.py"
.venv/bin/python -m examples.run_order --orders 5 --api http://127.0.0.1:8080
echo "== example: examples/invoicing.py (a schedule, child workflows, steps completed from outside)"
.venv/bin/python -m examples.run_invoicing --api http://127.0.0.1:8080
cat <<MSG

Cluster running: Kafka $CEREBELUM_KAFKA, PostgreSQL $CEREBELUM_DATABASE_URL, API http://127.0.0.1:8080
The API's admin token is in $run_dir/api-token:
  curl -H "Authorization: Bearer \$(cat $run_dir/api-token)" http://127.0.0.1:8080/executions
Logs in $run_dir/. Stop everything with: bash scripts/cluster.sh down
MSG
