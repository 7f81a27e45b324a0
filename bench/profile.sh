#!/usr/bin/env bash
# Profile the worker under the throughput load.
#
#   bash bench/profile.sh [py-spy|pyinstrument] [N]        (default: py-spy 20000)
#
# py-spy (default) attaches to the running worker from outside for exactly the measured window
# (first start-command to last `completed` row) and samples it at 100 Hz: the worker runs its
# normal code at nearly full speed. pyinstrument instead runs the whole worker process under its
# profiler (start-up and warm-up included) and slows it more. Both write speedscope JSON to
# bench/results/profiles/ (open at https://www.speedscope.app); the top functions by self time,
# by total time and self time per package go into bench/results/throughput-profiled-*.json
# ("hot_spots"). Re-rank any profile with: python -m bench.profiles FILE.speedscope.json
#
# Needs the services of bench/README.md (CEREBELUM_KAFKA, CEREBELUM_DATABASE_URL) and
#   .venv/bin/pip install py-spy==0.4.1 pyinstrument==5.1.3
# py-spy attaches with ptrace: run as root, or allow it (sysctl kernel.yama.ptrace_scope=0).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
profiler=${1:-py-spy}
n=${2:-20000}
exec .venv/bin/python -m bench.throughput --n "$n" --profile "$profiler"
