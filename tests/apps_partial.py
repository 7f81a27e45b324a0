"""A worker app with only part of tests/apps.py's workflows (w3): beside a worker running all of
them, the starts of the others that land on its partitions are held, not refused
(tests/integration/test_partial_workers.py, decisions.md §6)."""

from __future__ import annotations

from tests.apps import w3  # noqa: F401  (registered by being a module global)
