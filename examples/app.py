"""Every example workflow, for `cerebelum worker --app examples.app` (scripts/cluster.sh)."""

from examples.order import order
from examples.polling import poll_job

__all__ = ["order", "poll_job"]
