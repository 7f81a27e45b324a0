"""What the benchmarks share: one module per concern, re-exported here (`from bench import common`).

    base        where results go, the polling interval, the clock convention, say()
    procfs      CPU (utime+stime) and RSS from /proc; CpuMeter; the services' processes by port
    processes   workers and mirrors as real `cerebelum` processes (Cluster), the load generator
    probes      Kafka and PostgreSQL from outside: reset topics, offsets, scan events, count rows
    results     percentiles, medians of repeated runs, machine and code identity, JSON, plots

Every benchmark runs against the services named by CEREBELUM_KAFKA and CEREBELUM_DATABASE_URL
(your own, see bench/README.md) and finds the broker's and PostgreSQL's processes by the ports
they listen on, so their CPU can be read from /proc. Workers and mirrors are started exactly as
an operator would run them, with their logs under bench/results/logs/.
"""

from bench.common.base import *  # noqa: F403
from bench.common.probes import *  # noqa: F403
from bench.common.processes import *  # noqa: F403
from bench.common.procfs import *  # noqa: F403
from bench.common.results import *  # noqa: F403
