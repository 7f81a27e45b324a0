"""Partition sets as the worker logs them ("0-3,7,9-10"), and back (tests and benchmarks read
ownership from the logs)."""

from __future__ import annotations

from collections.abc import Iterable


def format_ranges(partitions: Iterable[int]) -> str:
    parts = sorted(partitions)
    if not parts:
        return "[]"
    out, start, prev = [], parts[0], parts[0]
    for p in [*parts[1:], None]:
        if p is not None and p == prev + 1:
            prev = p
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if p is not None:
            start = prev = p
    return ",".join(out)


def parse_ranges(text: str) -> frozenset[int]:
    """The inverse of format_ranges: "0-3,7,9-10" -> {0, 1, 2, 3, 7, 9, 10}."""
    text = text.strip()
    if text in ("", "[]"):
        return frozenset()
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return frozenset(out)
