#!/usr/bin/env bash
# Every benchmark at its full size, three runs each (the medians are reported), in an order that
# respects their one dependency: latency's open-loop rates come from the latest throughput result.
# About 20 minutes on the 2-core development box. Needs the services of bench/README.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=.venv/bin/python
: "${CEREBELUM_KAFKA:?set CEREBELUM_KAFKA (and CEREBELUM_DATABASE_URL) to your own services}"
$py -m bench.throughput --n 20000 --repeat 3
$py -m bench.latency --repeat 3
$py -m bench.parked --m 100000 --m 300000 --m 1000000 --restores 3
$py -m bench.mirror --executions 50000 --repeat 3
$py -m bench.scaling --n 20000 --workers 1 2 3 --repeat 3
