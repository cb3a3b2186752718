"""Reading a page: the splitter that reads big pages agrees with orjson on every page shape.

`read_page` parses small pages whole and splits big ones; whichever path a page takes, its
items, cursor and validity must be the same. The property tests force the splitter on pages of
any shape (hypothesis JSON, random whitespace, truncations) and compare it with orjson.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import page
from gateway.errors import UpstreamInvalid
from gateway.page import Raw, read_page, value_bound
from tests.conftest import examples


def parsed(items: list[Any]) -> list[Any]:
    return [orjson.loads(i.json) if isinstance(i, Raw) else i for i in items]


def split(body: bytes, limit: int | None = None) -> tuple[list[Any], str | None]:
    """The splitter's answer, whatever the page's size."""
    saved, page.FAST_VALUES = page.FAST_VALUES, -1
    try:
        return read_page(body, "u", limit)
    finally:
        page.FAST_VALUES = saved


def whole(body: bytes, limit: int | None = None) -> tuple[list[Any], str | None]:
    saved, page.FAST_VALUES = page.FAST_VALUES, 1 << 62
    try:
        return read_page(body, "u", limit)
    finally:
        page.FAST_VALUES = saved


scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8)
json_values = st.recursive(
    scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
metadata = st.fixed_dictionaries({}, optional={"nextCursor": st.text(max_size=6) | st.none(),
                                              "count": st.integers(0, 9)})  # fmt: skip
documents = st.one_of(
    st.lists(json_values, max_size=6),
    st.builds(
        lambda items, meta, extra, order: dict(
            sorted(
                {"servers": items, "metadata": meta, **extra}.items(),
                key=lambda kv: order * len(kv[0]),
            )
        ),
        st.lists(json_values, max_size=6),
        metadata,
        st.dictionaries(st.sampled_from(["x", "junk", "links"]), json_values, max_size=2),
        st.sampled_from([1, -1]),
    ),
)


def spaced(document: Any, space: str) -> bytes:
    """JSON with whitespace wherever JSON allows it."""
    text = orjson.dumps(document).decode()
    out, in_string, escaped = [], False, False
    for char in text:
        out.append(char)
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[]{},:":
            out.append(space)
    return (space + "".join(out) + space).encode()


@settings(max_examples=examples(250), deadline=None)
@given(documents, st.sampled_from(["", " ", "\n\t ", "\r\n"]))
def test_the_splitter_reads_every_page_as_orjson_does(document: Any, space: str) -> None:
    body = spaced(document, space)
    try:
        expected_items, expected_cursor = whole(body)
    except UpstreamInvalid:
        with pytest.raises(UpstreamInvalid):
            split(body)
        return
    items, cursor = split(body)
    assert parsed(items) == expected_items
    assert cursor == expected_cursor


@settings(max_examples=examples(250), deadline=None)
@given(documents, st.data())
def test_a_damaged_page_is_invalid_or_its_damage_stays_in_one_item(
    document: Any, data: Any
) -> None:
    """Truncated or altered bytes: orjson refuses the page; the splitter refuses it too, or
    hands over items of which one does not parse (and is skipped as an entry)."""
    body = orjson.dumps(document)
    at = data.draw(st.integers(0, max(len(body) - 1, 0)))
    damaged = data.draw(
        st.sampled_from(
            [body[:at], body[:at] + b"}" + body[at:], body[:at] + b"," + body[at + 1 :]]
        )
    )
    try:
        whole(damaged)
        return  # still valid JSON
    except UpstreamInvalid:
        pass
    try:
        items, _ = split(damaged)
    except UpstreamInvalid:
        return
    with pytest.raises(orjson.JSONDecodeError):
        parsed(items)


@given(st.integers(0, 8), st.integers(0, 8))
def test_more_items_than_asked_for_is_invalid_on_both_paths(count: int, limit: int) -> None:
    body = orjson.dumps({"servers": [{}] * count, "metadata": {}})
    for read in (whole, split):
        if count > limit:
            with pytest.raises(UpstreamInvalid, match=f"more than the {limit} asked for"):
                read(body, limit)
        else:
            assert len(read(body, limit)[0]) == count


def test_the_value_bound_is_an_upper_bound() -> None:
    document = {"servers": [{"a": [1, 2, {"b": None}]}, "x,y:[{"], "metadata": {"count": 1}}
    values = 0

    def count(value: Any) -> None:
        nonlocal values
        values += 1
        if isinstance(value, dict):
            values += len(value)  # keys
            for item in value.values():
                count(item)
        elif isinstance(value, list):
            for item in value:
                count(item)

    count(document)
    assert value_bound(orjson.dumps(document)) >= values


@pytest.mark.parametrize(
    "body",
    [
        b'{"servers":[' + b",".join([b"{}"] * 1_000_000) + b"]}",
        b'{"junk":[' + b",".join([b"[]"] * 1_000_000) + b'],"servers":[]}',
        b'{"servers":["' + b'\\"' * 200_000 + b"\\," * 600_000,  # a string never closed
        b'{"servers":[' + b'"\\"",' * 300_000 + b"]}",  # escaped quotes, in many strings
    ],
    ids=[
        "a million items",
        "a million values besides the items",
        "an unclosed string of escaped quotes",
        "many strings of escaped quotes",
    ],
)
def test_a_hostile_page_is_refused_before_it_is_read_in_full(body: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(UpstreamInvalid):
        read_page(body, "u", 100)
    assert time.perf_counter() - started < 0.5  # one pass at most, or it stops early
