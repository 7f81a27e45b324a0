"""Opaque page cursors: a short JSON list, URL-safe base64 without padding.

The API's keyset pages (executions, dead letters) hand one out as `next_cursor` and read it back
from `?cursor=`; what the list holds is each list's own business.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson


def pack(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def unpack(cursor: str) -> list[Any]:
    """The list `pack` made; ValueError for anything else."""
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not a cursor: {exc}") from None
    if not isinstance(values, list):
        raise ValueError("not a cursor: not a list")
    return values
