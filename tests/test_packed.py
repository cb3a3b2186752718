"""The snapshot as one buffer (`gateway.pack`, `gateway.packed`): every view's items, byte for
byte what the live snapshot serves, each shared byte string once; a buffer cut short or
changed anywhere is refused with a `StateError`, never misread. Read back as live objects
(`gateway.unpack`), or served from it as it is read (`gateway.inplace`), it is the snapshot it
was packed from: the same bytes, listings, facts and suffix keys."""

from __future__ import annotations

import gc
import mmap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.catalog import Origin
from gateway.config import FederationConfig, GatewaySettings, ViewSettings
from gateway.entry import Splice, parse_item
from gateway.errors import StateError
from gateway.inplace import PlacedItems, in_place
from gateway.loader import load_config
from gateway.merge import Source
from gateway.pack import pack, seal
from gateway.packed import Packed
from gateway.served import Deferred
from gateway.snapshot import Snapshot, build_snapshot
from gateway.unpack import unpack
from tests.conftest import examples
from tests.fakes import server_entry

DEMO = Path(__file__).resolve().parents[1] / "federation_config" / "demo"
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def demo_snapshot() -> Snapshot:
    config = load_config(DEMO)
    raw = orjson.loads((DEMO / "catalog.json").read_bytes())["servers"]
    entries = [parse_item(item, seen_at=NOW) for item in raw]
    return build_snapshot(config, [Source("demo", entries)], {"demo": Origin("demo", NOW)}, NOW)


def assert_same(snapshot: Snapshot, packed: Packed) -> None:
    """Every view, row by row: what filters read and the bytes served, as the live one; and
    read back as live objects, the same snapshot."""
    assert set(packed.views) == set(snapshot.views)
    assert packed.built_at == snapshot.built_at
    assert packed.stale == snapshot.stale
    assert packed.hidden == snapshot.hidden
    assert packed.verification == snapshot.verification
    assert packed.next_change == snapshot.next_change
    for name, catalog in snapshot.views.items():
        view = packed.views[name]
        items = catalog.every.items
        assert view.rows() == len(items)
        assert len(view) == len(catalog)
        assert view.upstream_counts == dict(catalog.upstream_counts)
        assert view.offered == catalog.offered
        assert view.signals == snapshot.signals.get(name, {})
        for row, item in enumerate(items):
            assert view.key(row) == item.key
            assert view.deleted(row) == item.deleted
            assert view.is_latest(row) == item.is_latest
            assert view.published_at(row) == item.published_at
            assert view.updated_at(row) == item.updated_at
            assert view.body(row) == catalog.body(item)
        for which in ("active", "latest"):
            listing = getattr(catalog, which).items
            assert [view.key(row) for row in view.listing(which)] == [i.key for i in listing]
    assert_live(snapshot, unpack(packed))
    assert_live(snapshot, in_place(packed))  # made as it is read: the same snapshot


def assert_live(snapshot: Snapshot, again: Snapshot) -> None:
    """A snapshot read back: every field, item and entry fact as the one packed."""
    for field in ("built_at", "hidden", "next_change", "stale", "verification", "signals"):
        assert getattr(again, field) == getattr(snapshot, field), field
    assert list(again.views) == list(snapshot.views)
    for name, catalog in snapshot.views.items():
        back = again.views[name]
        assert (back.view, back.offered, back.hidden) == (name, catalog.offered, catalog.hidden)
        assert dict(back.upstream_counts) == dict(catalog.upstream_counts)
        assert back.search is None  # the index is made again from the entries
        for which in ("every", "active", "latest"):
            items, again_items = getattr(catalog, which).items, getattr(back, which).items
            assert len(again_items) == len(items)
            for item, read in zip(items, again_items, strict=True):
                assert back.body(read) == catalog.body(item)
                assert read.suffix == item.suffix
                for attribute in ("name", "version", "name_folded", "deleted", "is_latest",
                                  "updated_at", "published_at"):  # fmt: skip
                    assert getattr(read, attribute) == getattr(item, attribute), attribute
                entry, was = read.registry_meta.entry, item.registry_meta.entry
                assert entry == was  # every field, the upstream's JSON included


def test_the_demo_packs_and_reads_back_byte_for_byte() -> None:
    snapshot = demo_snapshot()
    shapes = {type(i.server_json) for c in snapshot.views.values() for i in c.every.items}
    assert Deferred in shapes or Splice in shapes  # the demo's views rewrite packages
    assert_same(snapshot, Packed(pack(snapshot)))


def test_a_packed_snapshot_is_read_in_place_from_a_file(tmp_path: Path) -> None:
    snapshot = demo_snapshot()
    path = tmp_path / "snapshot.bin"
    path.write_bytes(pack(snapshot))
    with (
        path.open("rb") as file,
        mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
        Packed(memoryview(mapped), str(path)) as packed,
    ):
        assert_same(snapshot, packed)


def test_a_catalog_served_in_place_makes_each_item_once_and_reads_as_a_list() -> None:
    """Served from the buffer, an item is made the first time it is read and the same object
    after, from any listing (so a scan, a page and a pack agree on it); indexes, slices and
    iteration behave as a list's."""
    snapshot = demo_snapshot()
    buffer = pack(snapshot)
    fresh = in_place(Packed(buffer)).views["default"].every.items
    assert isinstance(fresh, PlacedItems)
    fresh[2]
    made = fresh.made()  # what it made, as lists to let go of: the third item alone
    assert [row for row, item in enumerate(made[0]) if item is not None] == [2]
    assert sum(entry is not None for entry in made[1]) == 1  # of the entries, its own
    served = in_place(Packed(buffer))
    for name, catalog in served.views.items():
        every, active, latest = catalog.every.items, catalog.active.items, catalog.latest.items
        listed = list(snapshot.views[name].every.items)
        assert len(every) == len(listed) > 0
        first = every[0]
        assert every[0] is first
        assert every[-len(every)] is first
        assert every[-1] is every[len(every) - 1]
        assert [i.key for i in every[1:3]] == [i.key for i in listed[1:3]]
        assert [i.key for i in every[::-2]] == [i.key for i in listed[::-2]]
        assert [i.key for i in every] == [i.key for i in listed]
        by_key = {item.key: item for item in every}
        for subset in (active, latest):
            assert all(item is by_key[item.key] for item in subset)
            assert [i.key for i in subset[1:]] == [i.key for i in list(subset)[1:]]
        with pytest.raises(IndexError):
            every[len(every)]
        with pytest.raises(IndexError):
            every[-len(every) - 1]


def test_a_catalog_served_in_place_keeps_each_text_once() -> None:
    """A text (a name, a version, a description) is kept decoded, not also as the byte
    string it was decoded from (11 % of a buffer, measured, kept twice for the run)."""
    served = in_place(Packed(pack(demo_snapshot())))
    for catalog in served.views.values():
        assert [item.registry_meta.entry.text for item in catalog.every.items]  # each made
    every = served.views["default"].every.items
    assert isinstance(every, PlacedItems)
    parts = every._parts
    texts = {int(index) for field in ("name", "identity", "version", "status", "text", "types",
             "transports", "hosts") for index in parts.packed.entries[field]}  # fmt: skip
    kept = set(parts._blobs)
    assert kept
    assert texts
    assert not texts & kept - {0}  # 0: the empty segment, a blob too


def test_a_catalog_served_in_place_lets_its_buffer_go_with_it() -> None:
    """Dropped without being released (a reader that outlived the swap), its buffer still
    goes with its last reference, even frozen as every catalog is (`gc.freeze`): the packed
    buffer's own objects refer to each other, a cycle the collector would never free."""
    buffer = bytearray(pack(demo_snapshot()))
    served = in_place(Packed(memoryview(buffer)))
    assert [item.key for item in served.views["default"].every.items]
    gc.freeze()
    try:
        with pytest.raises(BufferError):
            buffer.extend(b"x")  # read in place: held
        del served
        buffer.extend(b"x")  # let go of
    finally:
        gc.unfreeze()


def test_a_server_object_every_view_shares_is_written_once() -> None:
    snapshot = demo_snapshot()
    buffer = pack(snapshot)
    served = {bytes(i.server_json) for i in snapshot.views["default"].every.items
              if isinstance(i.server_json, bytes)}  # fmt: skip
    assert served
    for server in served:
        assert buffer.count(server) == 1
    items = sum(len(c.every.items) for c in snapshot.views.values())
    served_bytes = sum(len(c.body(i)) for c in snapshot.views.values() for i in c.every.items)
    assert items > len(snapshot.views["default"].every.items)  # more than one view serves
    assert len(buffer) < served_bytes


def test_packing_is_deterministic() -> None:
    """The same snapshot, the same buffer: replicas with the same data write the same file."""
    assert pack(demo_snapshot()) == pack(demo_snapshot())


def test_an_empty_view_packs() -> None:
    config = FederationConfig(
        directory=Path("."),
        gateway=GatewaySettings.model_validate({"upstreams": [{"name": "one", "file": "x"}]}),
        views={"none": ViewSettings.model_validate({"default": "deny", "rules": []})},
    )
    entry = parse_item(server_entry("io.github.a/n", "1.0.0"), seen_at=NOW)
    snapshot = build_snapshot(config, [Source("one", [entry])], {"one": Origin("one", NOW)}, NOW)
    packed = Packed(pack(snapshot))
    assert packed.views["none"].rows() == 0
    assert_same(snapshot, packed)


# -- the class of catalogs: any names, versions, statuses, packages and views ------------------

NAMES = st.sampled_from(["io.github.a/n", "io.github.a/m", "com.example/x", "io.github.z/y-z"])
VERSIONS = st.sampled_from(["1.0.0", "1.1.0", "2.0.0-rc.1", "2.0.0", "v3", "0.0.1"])
PACKAGE = st.fixed_dictionaries({
    "registryType": st.sampled_from(["npm", "pypi", "oci", "cargo"]),
    "identifier": st.sampled_from(["x", "pkg-y", "docker.io/a/b"]),
    "version": VERSIONS,
    "transport": st.just({"type": "stdio"}),
})  # fmt: skip
ENTRIES = st.lists(
    st.tuples(NAMES, VERSIONS, st.sampled_from(["active", "deprecated", "deleted"]),
              st.lists(PACKAGE, max_size=2), st.text(max_size=12)),
    max_size=12, unique_by=lambda t: (t[0], t[1]),
)  # fmt: skip
MIRRORS = {"npm": "https://art.example.com/api/npm/npm-remote/",
           "pypi": "https://art.example.com/api/pypi/pypi-remote/simple/"}  # fmt: skip


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ENTRIES, st.booleans())
def test_any_catalog_packs_and_reads_back_byte_for_byte(
    rows: list[tuple[str, str, str, list[dict[str, Any]], str]], own_mirror: bool
) -> None:
    views: dict[str, Any] = {"unit": {"rules": []}}
    if own_mirror:
        views["payments"] = {"mirrors": {"npm": "https://art.example.com/payments-npm/"}}
    config = FederationConfig(
        directory=Path("."),
        gateway=GatewaySettings.model_validate({"upstreams": [{"name": "one", "file": "x"}]}),
        mirrors=MIRRORS,
        views={name: ViewSettings.model_validate(value) for name, value in views.items()},
    )
    entries = [
        parse_item(server_entry(name, version, status=status, packages=packages,
                                description=f"A server. {text}"), seen_at=NOW)
        for name, version, status, packages, text in rows
    ]  # fmt: skip
    snapshot = build_snapshot(config, [Source("one", entries)], {"one": Origin("one", NOW)}, NOW)
    assert_same(snapshot, Packed(pack(snapshot)))


# -- a buffer cut short or changed: refused, never misread ------------------------------------


def test_a_buffer_cut_short_anywhere_is_refused() -> None:
    buffer = pack(demo_snapshot())
    for size in sorted({*range(64), *range(64, len(buffer), max(1, len(buffer) // 400))}):
        with pytest.raises(StateError):
            Packed(buffer[:size])


@settings(max_examples=examples(300), deadline=None)
@given(st.data())
def test_a_buffer_changed_anywhere_is_refused(data: st.DataObject) -> None:
    buffer = bytearray(PACKED_DEMO)
    at = data.draw(st.integers(0, len(buffer) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda v: v != buffer[at]))
    buffer[at] = value
    with pytest.raises(StateError):
        Packed(bytes(buffer))


def _opened(buffer: bytes) -> tuple[dict[str, Any], bytes]:
    """A packed buffer's contents and its sections (what `seal` puts together again)."""
    size = int.from_bytes(buffer[12:20], "little")
    head = 52 + size
    return orjson.loads(buffer[52:head]), buffer[head + -head % 8 :]


def test_contents_of_the_wrong_shapes_are_refused() -> None:
    """Sealed anew (a digest proves no more than that the bytes are whole), every field of
    the contents is still checked: the wrong type, a missing section, one out of bounds."""
    contents, sections = _opened(PACKED_DEMO)
    table = contents["sections"]
    segments_at = table["segments"]
    for key, value in [
        ("builtAt", "x"), ("views", [{"name": 1}]), ("sections", []), ("hidden", 3),
        ("stale", None), ("nextChange", "soon"), ("extra", 1), ("builtAt", 2**62),
        ("views", [*contents["views"], {"name": "nothing", "upstreamCounts": {}}]),
        ("sections", {**table, "segments": [segments_at[0], 10**9, "B"]}),
        ("sections", {**table, "segments": [segments_at[0] + 3, segments_at[1], "B"]}),
        ("sections", {**table, "bounds": [*table["bounds"][:2], "q"]}),
        ("sections", {**table, "default.entry": [*table["default.entry"][:2], "B"]}),
        ("sections", {**table, "entries.published": [*table["entries.published"][:2], "I"]}),
        ("suffixes", [[0, True, "demo", ["x"], ["present", None, None, [], [], 1]]]),
        ("suffixes", [[0, "yes", "demo", [], None]]), ("fingerprint", None),
        ("sections", {**table, "default.end": [table["default.end"][0], 6, "I"]}),
    ]:  # fmt: skip
        with pytest.raises(StateError, match="not a usable packed snapshot"):
            Packed(seal(orjson.dumps({**contents, key: value}), sections))
    assert_same(demo_snapshot(), Packed(seal(orjson.dumps(contents), sections)))


@pytest.mark.parametrize("column", [
    "default.entry", "entries.registry", "default.server", "default.end", "default.active",
    "default.suffix", "entries.name", "entries.text", "entries.server", "entries.published",
    "parts.whole", "parts.middle",
])  # fmt: skip
def test_numbers_that_point_outside_are_refused(column: str) -> None:
    contents, sections = _opened(PACKED_DEMO)
    offset, _, code = contents["sections"][column]
    worst = (2**63 - 1).to_bytes(8, "little") if code == "q" else b"\xff" * 4
    changed = sections[:offset] + worst + sections[offset + len(worst) :]
    with pytest.raises(StateError, match="not a usable packed snapshot"):
        Packed(seal(orjson.dumps(contents), changed), "snapshot.bin")


PACKED_DEMO = pack(demo_snapshot())
