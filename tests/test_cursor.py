from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.cursor import Cursor, Walk, decode_cursor, encode_cursor
from gateway.errors import BadRequest

texts = st.one_of(st.none(), st.text(max_size=40))


@given(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=40), texts, texts, texts)
def test_round_trip_and_url_safe(
    name: str, version: str, search: str | None, vfilter: str | None, since: str | None
) -> None:
    cursor = Cursor(name, version, Walk(search, vfilter, since, include_deleted=True))
    text = encode_cursor(cursor)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", text)  # safe to paste into a URL unencoded
    assert decode_cursor(text) == cursor


def test_tampered_cursor_is_rejected() -> None:
    text = encode_cursor(Cursor("io.github.a/b", "1.0.0", Walk(search="weather")))
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    raw[5] ^= 0x01
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(BadRequest, match="invalid cursor"):
        decode_cursor(forged)


@pytest.mark.parametrize(
    "text", ["", "!!!", "io.github.a/b:1.0.0", "a" * 5000, "eyJmb28iOiAiYmFyIn0", "AAAA"]
)
def test_garbage_is_rejected(text: str) -> None:
    with pytest.raises(BadRequest):
        decode_cursor(text)
