"""Every example workflow, for `cerebelum worker --app examples.app` (scripts/cluster.sh)."""

from examples.invoicing import invoice, month_end
from examples.order import order
from examples.polling import poll_job

__all__ = ["invoice", "month_end", "order", "poll_job"]
