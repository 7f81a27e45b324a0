"""The list query's pure parts (cerebelum.api.listing): parameters, filters, cursors, and the
shape of the SQL. The rows it returns: tests/integration/test_api_lists.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cerebelum.api.listing import (
    ListProblem,
    ListRequest,
    build_query,
    decode_cursor,
    encode_cursor,
    json_filters,
    unknown_parameters,
)

stamps = st.one_of(st.none(), st.datetimes(timezones=st.just(UTC)))


@given(sort=st.sampled_from(["started", "updated"]), key=stamps, eid=st.text(min_size=1))
def test_a_cursor_names_its_row_and_its_order(sort: str, key: datetime | None, eid: str) -> None:
    cursor = encode_cursor(sort, key, eid)
    assert cursor.isascii() and "=" not in cursor  # fits a query string as it is
    assert decode_cursor(cursor, sort) == (key, eid)
    other = "updated" if sort == "started" else "started"
    with pytest.raises(ListProblem, match="another order"):
        decode_cursor(cursor, other)


@pytest.mark.parametrize("cursor", ["", "!!", "bm90IGpzb24", "WzEsMl0"])  # "not json", [1,2]
def test_a_cursor_not_made_here_is_refused(cursor: str) -> None:
    with pytest.raises(ListProblem):
        decode_cursor(cursor, "started")


def test_unknown_parameters() -> None:
    known = ["workflow", "status", "cursor", "limit", "sort", "input.a", "output.b.c"]
    assert unknown_parameters(known) == []
    assert unknown_parameters(["offset", "limit", "inputs.a", "page"]) == [
        "inputs.a", "offset", "page"]  # fmt: skip


def test_json_filters_nest_their_path_and_parse_json_values() -> None:
    found = json_filters([("input.customer", "c-42"), ("input.a.b", "7"),
                          ("output.ok", "true"), ("input.s", '"7"'), ("limit", "3")])  # fmt: skip
    assert found == [("inputs", {"customer": "c-42"}), ("inputs", {"a": {"b": 7}}),
                     ("output", {"ok": True}), ("inputs", {"s": "7"})]  # fmt: skip
    with pytest.raises(ListProblem, match="at most 8"):
        json_filters([(f"input.k{i}", "1") for i in range(9)])


def test_every_value_is_a_parameter_never_sql_text() -> None:
    evil = "x'; DROP TABLE executions; --"
    request = ListRequest(workflow=evil, statuses=[evil, "b"], id_prefix=evil,
                          contains=[("inputs", {evil: evil})],
                          cursor=encode_cursor("started", None, evil))  # fmt: skip
    sql, args = build_query(request, "execution_id")
    assert evil not in sql and "DROP" not in sql
    assert args.count(evil) == 4  # workflow, id prefix, cursor id, one status
    assert sql.count("UNION ALL") == 1  # one ordered scan per status, merged
