"""The benchmark's workflows (`cerebelum worker --app bench.failover.app`).

`parked` sleeps for an hour: each one is a live execution that costs the worker a timer and a
snapshot, and costs a restore one record of `cerebelum.state`, which is what the benchmark
varies. Its first event (ExecutionStarted) is also what a probe start-command produces, so a
probe tells when its partition processes input again.
"""

from __future__ import annotations

from cerebelum import Workflow, sleep

parked = Workflow("parked", sleep(3600, name="park"))
