"""JSON bodies at the API's entrance: depth and integer bounds give 422, never a 500 later."""

from __future__ import annotations

import pytest

from cerebelum.api.bodies import (
    MAX_BODY_BYTES,
    MAX_INT,
    MAX_JSON_DEPTH,
    MIN_INT,
    BodyProblem,
    check_json_body,
    depth,
)


def nested(levels: int) -> bytes:
    return b'{"a": ' * levels + b"1" + b"}" * levels


@pytest.mark.parametrize(
    "body",
    [b"", b"  ", b"null", b"1", b'"x"', b"[]", b'{"a": [1, 2.5, "x", null, true]}',
     nested(MAX_JSON_DEPTH), str(MAX_INT).encode(), str(MIN_INT).encode()],
)  # fmt: skip
def test_bodies_within_the_limits_pass(body: bytes) -> None:
    check_json_body(body)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{bad", 400, "not valid JSON"),
        (b"NaN", 400, "not valid JSON"),
        (b'{"a": Infinity}', 400, "not valid JSON"),
        (nested(MAX_JSON_DEPTH + 1), 422, f"deeper than {MAX_JSON_DEPTH} levels"),
        (b"[" * 300 + b"]" * 300, 422, "deeper than"),
        (b"[" * 100_000 + b"]" * 100_000, 422, "deeper than"),  # past orjson's own limit
        (b"[" * 100_000, 422, "deeper than"),
        (str(MAX_INT + 1).encode(), 422, "outside 64 bits"),
        (str(MIN_INT - 1).encode(), 422, "outside 64 bits"),
        (b'{"inputs": {"n": ' + b"9" * 5000 + b"}}", 422, "integer 999999999999999999999999..."),
        (b'{"n": 1e400}', 422, "number 1e400 is beyond a 64-bit float"),
        (b"[" * 5000 + b"9" * 400 + b"]" * 5000, 422, "deeper than"),
        (b"x" * (MAX_BODY_BYTES + 1), 413, "over the limit"),
    ],
)
def test_bodies_past_the_limits_are_refused(body: bytes, status: int, says: str) -> None:
    with pytest.raises(BodyProblem) as caught:
        check_json_body(body)
    assert caught.value.status == status
    assert says in caught.value.message


def test_depth_counts_arrays_and_objects() -> None:
    assert [depth(v) for v in (1, "x", None, [], {}, [[]], {"a": [1, {"b": 2}]})] == [
        0, 0, 0, 1, 1, 2, 3
    ]  # fmt: skip
