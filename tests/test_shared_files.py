"""What workers and replicas share is read as hostile, whatever its bytes: the run's files of
`serve --workers N` (`sharing`) and the snapshot store's notes (`store`) are taken only in their
one exact shape (property tests of the class)."""

from __future__ import annotations

import itertools
import re
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway import rundir, sharing
from gateway.errors import StoreGarbled
from gateway.store import CATALOG_KEY, Current, Lease, read_current

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


def _chain_note(count: int) -> dict[str, object]:
    """current.json of a chain of `count` parts after a whole catalog (a whole one for 0)."""
    generations = [f"{_TOKEN}.{n}" for n in range(count + 1)]
    chain = [{"generation": g, "key": f"catalogs/{g}.part.pack", "size": 5, "base": b}
             for b, g in itertools.pairwise(generations)]  # fmt: skip
    whole = {"generation": generations[0], "key": f"catalogs/{generations[0]}.pack", "size": 10}
    note: dict[str, object] = {**_CURRENT, **(chain[-1] if chain else whole)}
    if chain:
        note.update(whole=whole, parts=chain[:-1])
    return note


_PART_FIELDS = st.sampled_from(["generation", "key", "size", "base"])
_GENERATIONS = st.integers(0, 20).map(lambda n: f"{_TOKEN}.{n}")
_FIELD_VALUES = st.one_of(
    _GENERATIONS, _GENERATIONS.map(lambda g: f"catalogs/{g}.part.pack"),
    _GENERATIONS.map(lambda g: f"catalogs/{g}.pack"), st.integers(0, 200),
)  # fmt: skip


@given(st.integers(0, 16), st.lists(st.tuples(st.integers(0, 16), _PART_FIELDS, _FIELD_VALUES),
                                    max_size=3),
       st.randoms(use_true_random=False))  # fmt: skip
def test_a_chain_of_parts_is_taken_only_when_each_follows_on_under_its_own_key(
    count: int, changes: list[tuple[int, str, object]], rng: Any
) -> None:
    """A chain changed anyhow (a part's generation, key, size or base; parts swapped,
    repeated or left out) is refused, or is still a chain: each part on the one before it,
    the first on the whole catalog, every key its own generation's, the sizes in bounds; and
    a replica serving any catalog of it applies exactly the parts after that one."""
    note = _chain_note(count)
    original = note.get("parts", [])
    parts = [dict(p) for p in original]  # type: ignore[attr-defined]
    for at, field, value in changes:
        if parts:
            parts[at % len(parts)][field] = value
    if parts and rng.random() < 0.3:
        rng.shuffle(parts)
    if parts and rng.random() < 0.2:
        parts.pop(rng.randrange(len(parts)))
    if original:
        note["parts"] = parts
    try:
        current = read_current(orjson.dumps(note), max_catalog=100)
    except StoreGarbled:
        assert parts != original  # an unchanged chain is taken
        return
    whole, chain = current.whole_catalog(), current.chain()
    assert whole.key == f"catalogs/{whole.generation}.pack"
    before = [whole.generation, *(part.generation for part in chain)]
    assert len(set(before)) == len(before)
    for at, part in enumerate(chain):
        assert part.base == before[at]
        assert part.key == f"catalogs/{part.generation}.part.pack"
    assert sum(part.size for part in chain) <= 100
    for at, generation in enumerate(before):
        after = current.parts_after(generation)
        assert after is not None
        assert [p.generation for p in after] == before[at + 1 :]


def test_an_unchanged_chain_is_taken_and_a_generation_named_twice_is_not() -> None:
    for count in range(17):
        current = read_current(orjson.dumps(_chain_note(count)), max_catalog=1 << 20)
        assert len(current.chain()) == count
    # Every part on the one before it, each under its own key, but one repeats the whole
    # catalog's generation: a replica serving that generation could not tell which it is.
    g0, g1, g2 = (f"{_TOKEN}.{n}" for n in range(3))
    looped = {**_chain_note(1), "generation": g2, "key": f"catalogs/{g2}.part.pack", "base": g0,
              "parts": [{"generation": g1, "key": f"catalogs/{g1}.part.pack", "size": 5, "base": g0},
                        {"generation": g0, "key": f"catalogs/{g0}.part.pack", "size": 5,
                         "base": g1}]}  # fmt: skip
    with pytest.raises(StoreGarbled, match="do not follow on"):
        read_current(orjson.dumps(looped), max_catalog=1 << 20)
