"""The workflows the benchmark workers run (`cerebelum worker --app bench.app`).

W3 is the standard workload of docs and targets: three sequential plain steps, each result
durably recorded (imported from tests/apps.py so tests and benchmarks run the very same code).
`parked` sleeps an hour as its first node: an execution that costs two events and then only
memory, which is what the parked-executions benchmark measures.
"""

from __future__ import annotations

from cerebelum import Workflow, sleep
from tests.apps import w3  # noqa: F401  (registered by being a module global)

# One hour: far beyond any benchmark run, so no timer fires while it is measured.
PARK_SECONDS = 3600

parked = Workflow("parked", [sleep(PARK_SECONDS, name="hour")])
