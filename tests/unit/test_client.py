"""The client's reading of terminal events (pure)."""

from __future__ import annotations

from cerebelum.client.client import _result_of
from cerebelum.core.events import EXECUTION_CANCELLED, cancelled_error, make_event


def test_a_cancelled_execution_has_the_one_cancelled_error_shape() -> None:
    event = make_event("e-1", 7, EXECUTION_CANCELLED, 1, reason="customer asked")
    result = _result_of(event)
    assert (result.status, result.output, result.version) == ("cancelled", None, 7)
    assert result.error == cancelled_error("customer asked")
    assert result.error == {"type": "Cancelled", "message": "customer asked"}
