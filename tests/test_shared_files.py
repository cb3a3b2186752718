"""What workers and replicas share is read as hostile, whatever its bytes: the run's files of
`serve --workers N` (`sharing`) and the snapshot store's notes (`store`) are taken only in their
one exact shape (property tests of the class)."""

from __future__ import annotations

import itertools
import re
import tempfile
from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway import rundir, sharing
from gateway.store import CATALOG_KEY, Current, Lease

_TOKEN = "abcdefabcdefabcd"
_GOOD = {"generation": f"{_TOKEN}.1", "file": f"catalog.{_TOKEN}.1.pack"}
_IN_PART = {**_GOOD, "base": f"{_TOKEN}.0"}
_VALUES = st.one_of(st.text(max_size=40), st.integers(-(2**63), 2**63 - 1), st.booleans(),
                    st.none(), st.lists(st.text(max_size=8), max_size=2),
                    st.dictionaries(st.text(max_size=8), st.one_of(st.lists(st.text(max_size=8)),
                                                                   st.text(max_size=8)),
                                    max_size=2))  # fmt: skip


@given(
    st.one_of(
        st.binary(max_size=300),
        st.dictionaries(st.sampled_from(["generation", "file", "loaded", "base", "x"]),
                        _VALUES, max_size=5).map(orjson.dumps),
        st.tuples(st.sampled_from(sorted(_GOOD)), st.text(max_size=60)).map(
            lambda change: orjson.dumps({**_GOOD, change[0]: change[1]})),
        st.tuples(st.sampled_from(sorted(_IN_PART)), _VALUES).map(
            lambda change: orjson.dumps({**_IN_PART, change[0]: change[1]})),
    )
)  # fmt: skip
def test_an_offer_is_taken_only_in_its_one_exact_shape(data: bytes) -> None:
    """Whatever bytes `offered.json` holds, it is read as an offer only when it is a JSON
    object of a generation of the pattern and the catalog file that generation names, with no
    separator or dot segment (never a path elsewhere), and for a catalog in part the
    generation it changes."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "offered.json"
        path.write_bytes(data)
        offer = rundir.read_note(path, sharing._Offer)
    if offer is None:
        return
    assert re.fullmatch(r"[0-9a-f]{16}\.[0-9]{1,12}", offer.generation)
    assert re.fullmatch(r"catalog\.[0-9a-f]{16}\.[0-9]{1,12}\.pack", offer.file)
    assert "/" not in offer.file
    keys = set(orjson.loads(data))
    assert {"generation", "file"} <= keys <= {"generation", "file", "base"}
    if offer.base is not None:
        assert re.fullmatch(r"[0-9a-f]{16}\.[0-9]{1,12}", offer.base)


_CURRENT = {"generation": f"{_TOKEN}.1", "key": f"catalogs/{_TOKEN}.1.pack",
            "builtAt": "2026-12-01T00:00:00Z", "fingerprint": "f", "size": 1}  # fmt: skip
_PART_BEFORE = {"generation": f"{_TOKEN}.1", "key": f"catalogs/{_TOKEN}.1.part.pack",
                "size": 1, "base": f"{_TOKEN}.0"}  # fmt: skip
_CURRENT_PART = {**_CURRENT, "generation": f"{_TOKEN}.2", "key": f"catalogs/{_TOKEN}.2.part.pack",
                 "base": f"{_TOKEN}.1", "parts": [_PART_BEFORE],
                 "whole": {"generation": f"{_TOKEN}.0", "key": f"catalogs/{_TOKEN}.0.pack",
                           "size": 1}}  # fmt: skip


@given(
    st.one_of(
        st.binary(max_size=300),
        st.tuples(st.sampled_from(sorted(_CURRENT)),
                  st.one_of(st.text(max_size=60), st.integers(-(2**63), 2**63 - 1), st.none())).map(
            lambda change: orjson.dumps({**_CURRENT, change[0]: change[1]})),
        st.tuples(st.sampled_from(sorted(_CURRENT_PART)), _VALUES).map(
            lambda change: orjson.dumps({**_CURRENT_PART, change[0]: change[1]})),
        st.tuples(st.sampled_from(sorted(_PART_BEFORE)), _VALUES).map(
            lambda change: orjson.dumps({**_CURRENT_PART,
                                         "parts": [{**_PART_BEFORE, change[0]: change[1]}]})),
    )
)  # fmt: skip
def test_a_store_note_is_taken_only_in_its_one_exact_shape(data: bytes) -> None:
    """current.json: exactly its keys and types (a key outside catalogs/ is refused by the
    store after this parse: `CATALOG_KEY`); lease.json: a holder and a moment."""
    try:
        current = Current.model_validate_json(data)
    except ValidationError:
        pass
    else:
        assert set(_CURRENT) <= set(orjson.loads(data)) <= set(_CURRENT_PART)
        if current.base is not None:
            assert re.fullmatch(r"[0-9a-f]{16}\.[0-9]{1,12}", current.base)
        if current.whole is not None:
            assert re.fullmatch(r"[0-9a-f]{16}\.[0-9]{1,12}", current.whole.generation)
            assert current.whole.size >= 0
        for part in current.parts:
            for generation in (part.generation, part.base):
                assert re.fullmatch(r"[0-9a-f]{16}\.[0-9]{1,12}", generation)
            assert part.size >= 0
            assert set(orjson.loads(data)["parts"][0]) == set(_PART_BEFORE)
        assert re.fullmatch(r"[0-9a-f]{16}\.[0-9]{1,12}", current.generation)
        assert current.size >= 0
        if CATALOG_KEY.fullmatch(current.key):
            assert current.key.startswith("catalogs/")
            assert ".." not in current.key
    try:
        lease = Lease.model_validate_json(data)
    except ValidationError:
        return
    assert set(orjson.loads(data)) == {"holder", "expires"}
    assert len(lease.holder) <= 200


@given(st.integers(0, 16), st.integers(0, 20))
def test_a_replica_applies_exactly_the_parts_after_the_catalog_it_serves(
    count: int, serves: int
) -> None:
    """Whatever catalog of the chain a replica serves (the whole one, a part, the current
    one), it applies the parts after it, in order; serving none of them, it applies none
    (it reads the whole one and every part: `Current.chain`)."""
    generations = [f"{_TOKEN}.{n}" for n in range(count + 1)]  # the whole one first
    chain = [{"generation": g, "key": f"catalogs/{g}.part.pack", "size": 1, "base": b}
             for b, g in itertools.pairwise(generations)]  # fmt: skip
    whole = {"generation": generations[0], "key": f"catalogs/{generations[0]}.pack", "size": 1}
    note = {**_CURRENT, **(chain[-1] if chain else whole)}
    if chain:
        note.update(whole=whole, parts=chain[:-1])
    current = Current.model_validate_json(orjson.dumps(note))
    assert [p.generation for p in current.chain()] == generations[1:]
    served = f"{_TOKEN}.{serves}"
    after = current.parts_after(served)
    if serves <= count:
        assert after is not None
        assert [p.generation for p in after] == generations[serves + 1 :]
        assert [p.base for p in after] == generations[serves:count]
    else:
        assert after is None
