"""A catalog handed over in part (`deltas`): a worker that serves the catalog before, given
only the servers that changed, serves what the building worker built, byte for byte and
figure by figure, build after build; and a part that does not fit is refused whole."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway import deltas
from gateway.app import REFRESHER
from gateway.build import Order
from gateway.catalog import Listing
from gateway.config import FederationConfig
from gateway.errors import StateError
from gateway.pacing import Allowance
from gateway.pack import pack
from gateway.packed import Packed
from gateway.search import SearchIndex, fold
from gateway.snapshot import Builder, Snapshot
from gateway.unpack import searched, unindexed, unpack
from tests.conftest import file_upstream
from tests.fakes import server_entry
from tests.test_increment import NAMES, UPSTREAMS, Steps, Syncs, config, random_syncs, same


def _through_a_file(snapshot: Snapshot) -> Snapshot:
    """The snapshot as another worker reads it: packed, then made live again."""
    with Packed(pack(snapshot), "a catalog") as packed:
        return unpack(packed)


@random_syncs(60, 10)
def test_a_catalog_in_part_put_into_the_one_before_is_the_catalog_built(
    settings_: FederationConfig, syncs: Syncs, builder: Builder, steps: Steps
) -> None:
    built = builder.build(syncs.sources(settings_), dict(syncs.origins), syncs.now)
    index = SearchIndex()  # the other worker's, brought up to each catalog in part
    followed, token, order, _ = searched(_through_a_file(built), index)  # whole, the first time
    index.update(token, order)
    for one_step in steps:
        syncs.step(*one_step)
        made = builder.build(syncs.sources(settings_), dict(syncs.origins), syncs.now)
        found = deltas.changes(built, made, share=1.0)
        assert found is not None
        changed = frozenset(name for names in found.values() for name in names)
        followed = deltas.applied(followed, _through_a_file(deltas.part(made, found)), found)
        followed, token, order, _ = searched(followed, index, (order, changed))
        index.update(token, order, changed)
        same(followed, made)
        assert followed.built_at == made.built_at
        assert followed.signals == made.signals
        whole = SearchIndex()  # what an index of the whole catalog says
        _, whole_token, whole_order, _ = searched(followed, whole)
        whole.update(whole_token, whole_order)
        assert _versions(order) == _versions(whole_order)
        for needle in NEEDLES:
            assert list(index.matching(needle, token, EVERY_STEP) or ()) == list(
                whole.matching(needle, whole_token, EVERY_STEP) or ()
            ), needle
        built = made


NEEDLES = ("alp", "com.example", "x/", "beta", "pha", "take 1", "eta")
EVERY_STEP = Allowance(None)


def _versions(order: Order) -> list[tuple[str, list[str]]]:
    return [(name, [entry.version for entry in entries]) for name, _, entries in order]


def _catalogs() -> tuple[Builder, Snapshot, Snapshot]:
    """A build of twelve servers, and one after a sync that changed one server's entry."""
    settings_ = config(False, False)
    syncs = Syncs([(UPSTREAMS[i % 3], name, "1.0.0", "active") for i, name in enumerate(NAMES)])
    builder = Builder(settings_)
    before = builder.build(syncs.sources(settings_), dict(syncs.origins), syncs.now)
    syncs.step("change", "u1", "", "", "active", 2)
    return builder, before, builder.build(syncs.sources(settings_), dict(syncs.origins), syncs.now)


def test_only_the_servers_that_changed_are_handed_over() -> None:
    _, before, after = _catalogs()
    found = deltas.changes(before, after)
    assert found is not None
    changed = {name for names in found.values() for name in names}
    assert len(changed) == 1  # of twelve
    part = deltas.part(after, found)
    assert {item.name for view in part.views.values() for item in view.every.items} == changed
    assert part.views["default"].upstream_counts == after.views["default"].upstream_counts


def test_a_catalog_mostly_changed_or_of_other_views_goes_whole() -> None:
    builder, before, after = _catalogs()
    assert deltas.changes(before, after, share=0.0) is None
    fresh = Builder(builder.config)  # nothing kept: every item is another object
    syncs = Syncs([(UPSTREAMS[i % 3], name, "1.0.0", "active") for i, name in enumerate(NAMES)])
    whole = fresh.build(syncs.sources(builder.config), dict(syncs.origins), syncs.now)
    assert deltas.changes(before, whole) is None
    fewer = replace(after, views={"default": after.views["default"]})
    assert deltas.changes(before, fewer) is None


def test_a_part_that_does_not_fit_the_catalog_is_refused() -> None:
    _, before, after = _catalogs()
    found = deltas.changes(before, after)
    assert found is not None
    part = _through_a_file(deltas.part(after, found))
    followed = _through_a_file(before)
    view = next(view for view, names in found.items() if names)
    name = found[view][0]
    other = next(item.name for item in before.views[view].every.items if item.name != name)
    wrong: list[tuple[dict[str, list[str]], Snapshot, str]] = [
        ({**found, view: [name, name]}, part, "not in order"),
        ({**found, view: sorted([name, other], reverse=True)}, part, "not in order"),
        ({**found, view: []}, part, "is not named"),
        ({k: v for k, v in found.items() if k != view}, part, "views"),
        (found, replace(part, views={view: part.views[view]}), "views"),
    ]
    catalog = part.views[view]
    own = {item.suffix for item in catalog.every.items}  # what the part's own items name
    assert set(catalog.suffixes) - own  # and some only the items kept name
    wrong += [
        (found, replace(part, views={**part.views, view: replace(catalog, suffixes={
            key: suffix for key, suffix in catalog.suffixes.items() if key in own})}),
         "suffixes is short"),  # the items kept name suffixes the part's table must hold
        (found, replace(part, config="another"), "another config"),
    ]  # fmt: skip
    # every server in part: items enough to put out of order
    every = {v: sorted({item.name for item in c.every.items}) for v, c in after.views.items()}
    whole = _through_a_file(deltas.part(after, every))
    listing = whole.views[view]
    assert len(listing.every.items) > 1
    backwards = replace(listing, every=Listing(listing.every.items[::-1]))
    wrong.append((every, replace(whole, views={**whole.views, view: backwards}), "list order"))
    for names, made, reason in wrong:
        with pytest.raises(StateError, match=reason):
            deltas.applied(followed, made, names)


def test_an_index_behind_looks_again_at_every_server_changed_since_it_was_brought_up() -> None:
    """A worker may take two catalogs in part before its index is brought up to the first:
    the next update looks at the servers of both; with nothing known of the index (none
    pending yet) or a whole catalog among them, at every server."""
    first, second = frozenset({"a/x"}), frozenset({"b/y"})
    assert unindexed([0, [], first], second) == first | second
    assert unindexed([0, [], frozenset()], second) == second  # brought up to the one before
    assert unindexed(None, second) is None
    assert unindexed([0, [], None], second) is None
    assert unindexed([0, [], first], None) is None


async def test_a_worker_taking_catalogs_in_part_faster_than_its_index_indexes_them_all(
    tmp_path: Path, make_config: Any, serve: Any
) -> None:
    """Two catalogs in part taken before the search index is brought up: the next update
    looks at the servers of both (the refresher's own bookkeeping, as a following worker's)."""
    upstream = file_upstream(tmp_path / "data", "approved", [server_entry("com.e/a", "1.0.0")])
    client = await serve(make_config(upstreams=[upstream]))
    refresher = client.app[REFRESHER]
    search = refresher.builder.search
    settings_ = config(False, False)
    syncs = Syncs([(UPSTREAMS[i % 3], name, "1.0.0", "active") for i, name in enumerate(NAMES)])
    builder = Builder(settings_)
    built = builder.build(syncs.sources(settings_), dict(syncs.origins), syncs.now)
    followed = searched(_through_a_file(built), search)
    await refresher.take(followed)
    await refresher._index()
    indexing = refresher._index
    refresher._index = _nothing  # the index falls behind: two catalogs taken meanwhile
    try:
        for note in (7770, 7766):  # dev.tools/eps of u0, then io.github.x/beta of u2
            syncs.step("change", UPSTREAMS[note % 3], "", "", "active", note)
            made = builder.build(syncs.sources(settings_), dict(syncs.origins), syncs.now)
            found = deltas.changes(built, made, share=1.0)
            assert found is not None
            changed = frozenset(name for names in found.values() for name in names)
            assert len(changed) == 1  # a server served, changed
            applied = deltas.applied(followed[0], _through_a_file(deltas.part(made, found)), found)
            followed = searched(applied, search, (followed[2], changed))
            await refresher.take(followed)
            built = made
    finally:
        refresher._index = indexing
    await refresher._index()
    assert search.covers(followed[1])
    for needle in ("take 7770", "take 7766", *(n for n in NEEDLES if len(n) >= 3)):
        assert list(search.matching(needle, followed[1], EVERY_STEP) or ()) == [
            name
            for name in _names(applied)
            if any(needle in text for text in _texts(applied, name))
        ], needle


async def _nothing() -> None:
    pass


def _names(snapshot: Snapshot) -> list[str]:
    return sorted({item.name for view in snapshot.views.values() for item in view.every.items})


def _texts(snapshot: Snapshot, name: str) -> list[str]:
    return [fold(entry.text) for view in snapshot.views.values() for item in view.every.items
            if item.name == name for entry in (item.registry_meta.entry,)]  # fmt: skip
