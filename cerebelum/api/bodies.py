"""What a JSON request body must be before a route sees it: bounded in size and depth, its
integers within 64 bits.

Without these checks, a start whose inputs nest a few hundred levels deep or hold 2**70 is
accepted by the body parser and then fails to encode as a command (orjson refuses both): a 500
instead of the caller's mistake. A signal payload's big integer would even be changed on the
way (orjson reads it as a float).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from cerebelum.core.commands import MAX_COMMAND_BYTES

# Far deeper than any real document, and well inside orjson's 255 levels once a command and an
# event have wrapped the value in theirs.
MAX_JSON_DEPTH = 64
# orjson encodes integers from -2**63 to 2**64 - 1; beyond that a command cannot be written.
MIN_INT, MAX_INT = -(2**63), 2**64 - 1
# A body is read whole before a route sees it. Twice the command limit leaves room for
# whitespace; a larger body can never become a command under the limit.
MAX_BODY_BYTES = 2 * MAX_COMMAND_BYTES


class BodyProblem(Exception):
    """Why a body is refused: the status (400, 413 or 422) and the error's one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_json_body(raw: bytes) -> None:
    """Raise BodyProblem unless `raw` is empty or JSON within the limits.

    1. orjson parses it: not JSON at all → 400; nested past orjson's 1,024 levels → 422
       (orjson counts without recursing, so no depth can exhaust the stack). A number too
       large even for a float is left to step 3 to name.
    2. Its depth, counted without recursion, is at most MAX_JSON_DEPTH → else 422.
    3. Parsed again by the standard library, whose integers are exact, every integer is
       within 64 bits and every float finite → else 422 (orjson would have read a big
       integer as a float).
    """
    if len(raw) > MAX_BODY_BYTES:
        raise BodyProblem(413, f"body is over the limit of {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc):
            raise BodyProblem(422, _too_deep()) from None
        if "infinity" not in str(exc):
            raise BodyProblem(400, "request body is not valid JSON") from None
    else:
        if depth(value) > MAX_JSON_DEPTH:
            raise BodyProblem(422, _too_deep())
    try:
        json.loads(raw, parse_int=_bounded_int, parse_float=_finite_float,
                   parse_constant=_not_json)  # fmt: skip
    except RecursionError:  # only after step 1 left a number to name, in a deep body
        raise BodyProblem(422, _too_deep()) from None
    except ValueError:
        raise BodyProblem(400, "request body is not valid JSON") from None


def depth(value: Any) -> int:
    """How deep arrays and objects nest in `value` (a scalar: 0, `[]`: 1, `[[1]]`: 2)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _bounded_int(text: str) -> int:
    # Digits alone say it: more than 20 is out of range, and int() of a huge string is slow.
    number = int(text) if len(text.lstrip("-")) <= 20 else MAX_INT + 1
    if not MIN_INT <= number <= MAX_INT:
        raise BodyProblem(
            422, f"integer {_shortened(text)} is outside 64 bits ({MIN_INT} to {MAX_INT}); "
            "send it as a string"
        )  # fmt: skip
    return number


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise BodyProblem(422, f"number {_shortened(text)} is beyond a 64-bit float")
    return number


def _not_json(text: str) -> Any:
    raise BodyProblem(400, "request body is not valid JSON")  # NaN, Infinity: not JSON


def _shortened(text: str) -> str:
    return f"{text[:24]}{'...' if len(text) > 24 else ''}"


def _too_deep() -> str:
    return f"body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels"
