"""Execution ids and names: the alphabet every entrance enforces, and the home partition.

An execution id is 1 to 200 characters from

    A-Z a-z 0-9 and  - _ . : @ ~ =

beginning with a letter or a digit. So an id is safe as a Kafka key, as one URL path segment
(no "/", no "%", nothing a client would normalise like "." or ".."), in a PostgreSQL text
column (no NUL) and in a log line (no control characters). UUIDs, ULIDs, "order-42",
"invoice:2026-12:7" and "ana@example.com" all pass. Workflow and signal names follow the same
rule.

The home partition of an execution is `murmur2(utf8(id)) & 0x7fffffff % partitions`: what
Kafka's default partitioner gives the key in every official client. An execution lives only
there; a command found on any other partition is dead-lettered (DESIGN.md, invariant 8).
"""

from __future__ import annotations

import re

MAX_ID_LENGTH = 200
ID_ALPHABET = "A-Z a-z 0-9 - _ . : @ ~ ="
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@~=-]{0,199}")


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and _VALID.fullmatch(value) is not None


def id_problem(value: object, what: str = "execution_id") -> str | None:
    """Why `value` is not a valid id or name (one line, fit for an error message), or None."""
    if not isinstance(value, str):
        return f"{what} must be a string"
    if not value:
        return f"{what} must not be empty"
    if len(value) > MAX_ID_LENGTH:
        return f"{what} is {len(value)} characters, over the limit of {MAX_ID_LENGTH}"
    if _VALID.fullmatch(value) is not None:
        return None
    if not value[0].isascii() or not value[0].isalnum():
        return f"{what} must begin with a letter or a digit (got {value[:1]!r})"
    bad = next(c for c in value if not (c.isascii() and (c.isalnum() or c in "_.:@~=-")))
    return f"{what} may only contain {ID_ALPHABET} (found {bad!r})"


# The ids of built-in executions (schedules, decisions.md §19; limiters, §20): a start of a
# user's workflow may not take one, or a schedule or a limiter would find it taken.
RESERVED_PREFIXES = ("schedule.", "concurrency.", "rate.")
BUILT_IN_WORKFLOW_PREFIX = "cerebelum."


def reserved_id_problem(execution_id: str, workflow: str) -> str | None:
    """Why a start of `workflow` may not take `execution_id` (a built-in's id), or None."""
    if workflow.startswith(BUILT_IN_WORKFLOW_PREFIX):
        return None
    if not execution_id.startswith(RESERVED_PREFIXES):
        return None
    prefixes = ", ".join(repr(p) for p in RESERVED_PREFIXES)
    return (
        f"execution_id {execution_id[:100]!r}: ids beginning with {prefixes} are reserved for "
        "schedules and limiters; choose another execution_id"
    )


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as an unsigned 32-bit int."""
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = length % 4
    if rest >= 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def home_partition(execution_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives this id as a key (every client agrees)."""
    return (murmur2(execution_id.encode()) & 0x7FFFFFFF) % partitions
