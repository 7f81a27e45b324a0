"""The id alphabet and the home partition (cerebelum.core.ids)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cerebelum.core.ids import MAX_ID_LENGTH, home_partition, id_problem, is_valid_id, murmur2

# Kafka's Java murmur2 of these keys, as Utils.murmur2 computes them (the same vectors the
# Java client's tests and librdkafka's murmur2 tests use).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "java"), JAVA_MURMUR2.items())
def test_murmur2_matches_kafkas(key: bytes, java: int) -> None:
    assert murmur2(key) == java & 0xFFFFFFFF


def test_home_partition_is_the_default_partitioners() -> None:
    # (murmur2 & 0x7fffffff) % 64, as org.apache.kafka.common.utils.Utils.toPositive does
    assert home_partition("foobar", 64) == ((-790332482) & 0x7FFFFFFF) % 64


@pytest.mark.parametrize(
    "value", ["a", "0", "order-42", "invoice:2026-12:7", "ana@example.com", "x~y=z", "a" * 200]
)
def test_valid_ids(value: str) -> None:
    assert is_valid_id(value) and id_problem(value) is None


@pytest.mark.parametrize(
    "value",
    ["", "a/b", "a b", "a\x00", "a\x7f", "\x01", ".", "..", "-a", "é", "a%2F", "a" * 201, 7],
)
def test_invalid_ids_say_why(value: object) -> None:
    assert not is_valid_id(value)
    problem = id_problem(value, "id")
    assert problem is not None and problem.startswith("id ")


@given(st.text(max_size=MAX_ID_LENGTH + 5))
def test_the_two_checks_agree(value: str) -> None:
    assert is_valid_id(value) == (id_problem(value) is None)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=50))
def test_no_valid_id_needs_escaping_in_a_url_path(value: str) -> None:
    from urllib.parse import quote

    if is_valid_id(value):
        assert quote(value, safe=":@~=") == value
