"""Rebuilds made in part (only what a sync changed merged and decided, spliced into the last
build's listings) give what a whole build gives: item by item, byte for byte, and figure by
figure, over random syncs of several upstreams with look-alike names, reserved names,
cooldowns, deleted versions, stale and hidden upstreams."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.snapshot as snapshot_module
from gateway import compiled
from gateway.catalog import Origin, ViewCatalog
from gateway.config import (
    FederationConfig,
    GatewaySettings,
    MirrorSettings,
    PolicySettings,
    UpstreamSettings,
    ViewSettings,
)
from gateway.entry import Entry, format_timestamp, parse_item
from gateway.merge import Source
from gateway.names import identity
from gateway.osv import read_feed
from gateway.released import release
from gateway.snapshot import Builder, Snapshot
from gateway.trust_config import TrustSettings
from tests.conftest import examples
from tests.fakes import server_entry
from tests.test_trust import osv

UPSTREAMS = ("u0", "u1", "u2")
# Look-alikes of one identity (case, trailing dots, separator runs), across namespaces.
NAMES = (
    "com.example/alpha", "COM.EXAMPLE/Alpha", "com.example./al.pha", "com.example/al--pha",
    "com.example/beta", "io.github.x/beta", "io.github.x/gamma", "io.github.x/x-spam-y",
    "io.github.x/delta", "dev.tools/eps", "dev.tools/zeta", "dev.tools/eta",
)  # fmt: skip
VERSIONS = ("0.0.1", "1.0.0", "1.1.0", "2.0.0-beta.1", "2.0.0")
STATUSES = ("active", "active", "active", "deprecated", "deleted")
START = datetime(2026, 6, 1, tzinfo=UTC)


def config(owns: bool, cooldown: bool) -> FederationConfig:
    upstreams = [
        UpstreamSettings(name=name, file=Path(f"{name}.json"),
                         owns=["com.example/*"] if owns and name == "u1" else [])
        for name in UPSTREAMS
    ]  # fmt: skip
    policy: dict[str, Any] = {
        "default": "allow",
        "rules": [{"deny": {"name": "*-spam-*"}}, {"deny": {"name": "dev.tools/eta",
                                                            "version": ">=2"}},
                  {"allow": {"upstream": "u2", "name": "io.github.x/*"}}],
    }  # fmt: skip
    if cooldown:
        policy["min_age"] = "2d"
    return FederationConfig(
        directory=Path("."),
        gateway=GatewaySettings(upstreams=upstreams),
        policy=PolicySettings.model_validate(policy),
        mirrors=MirrorSettings.model_validate({"npm": "https://npm.mirror.example/"}),
        views={
            "narrow": ViewSettings.model_validate({
                "default": "deny", "rules": [{"allow": {"name": "com.example/*"}}],
                "mirrors": {"npm": "https://narrow.mirror.example/npm/"},
            }),
            "plain": ViewSettings.model_validate({"rules": [{"deny": {"status": "deprecated"}}]}),
        },
    )  # fmt: skip


def entry(name: str, version: str, status: str, published: datetime, note: int) -> Entry:
    return parse_item(
        server_entry(name, version, status=status, published=format_timestamp(published),
                     updated=format_timestamp(published + timedelta(minutes=note)),
                     description=f"{name} {version} take {note}"),
        seen_at=published,
    )  # fmt: skip


def dump(view: ViewCatalog) -> dict[str, object]:
    def listing(items: list[Any]) -> list[tuple[str, str, bytes]]:
        return [(item.name, item.version, view.body(item)) for item in items]

    return {
        "every": listing(view.every.items), "active": listing(view.active.items),
        "latest": listing(view.latest.items), "counts": list(view.upstream_counts.items()),
        "offered": view.offered, "hidden": view.hidden,
    }  # fmt: skip


def same(made: Snapshot, whole: Snapshot) -> None:
    """The same catalogs and figures, dicts in the same order (status and packing show it)."""
    assert made.views.keys() == whole.views.keys()
    for name, view in made.views.items():
        assert dump(view) == dump(whole.views[name]), name
    assert [(v, list(h.items())) for v, h in made.hidden.items()] == [
        (v, list(h.items())) for v, h in whole.hidden.items()
    ]
    assert made.next_change == whole.next_change
    assert made.stale == whole.stale


class Syncs:
    """The upstreams' entries and origins, and the time, as random syncs leave them."""

    def __init__(self, first: list[tuple[str, str, str, str]]) -> None:
        self.feeds: dict[str, dict[tuple[str, str], Entry]] = {u: {} for u in UPSTREAMS}
        for index, (upstream, name, version, status) in enumerate(first):
            self.feeds[upstream][(name, version)] = entry(name, version, status, START, index)
        self.origins = {u: Origin(u, START) for u in UPSTREAMS}
        self.now = START + timedelta(days=1)

    def step(self, kind: str, upstream: str, name: str, version: str, status: str,
             note: int) -> None:  # fmt: skip
        feed, origins, now = self.feeds[upstream], self.origins, self.now
        if kind == "change" and feed:
            key = sorted(feed)[note % len(feed)]
            feed[key] = entry(*key, status, START + timedelta(hours=note % 72), note)
        elif kind == "add":
            feed[(name, version)] = entry(name, version, status, now - timedelta(hours=note % 72),
                                          note)  # fmt: skip
        elif kind == "remove" and feed:
            del feed[sorted(feed)[note % len(feed)]]
        elif kind == "drop":  # every spelling of a name's identity: another owner may take it
            for key in [k for k in feed if identity(k[0]) == identity(name)]:
                del feed[key]
        elif kind == "move" and feed:  # the same entries in another order
            keys = sorted(feed)
            self.feeds[upstream] = {
                k: feed[k] for k in keys[note % len(keys) :] + keys[: note % len(keys)]
            }
        elif kind == "time":
            self.now += timedelta(hours=note % 60)
        elif kind == "stale":
            stale = None if origins[upstream].stale else now
            origins[upstream] = Origin(upstream, origins[upstream].synced_up_to, stale)
        elif kind == "hide":
            hidden = not origins[upstream].hidden
            origins[upstream] = Origin(upstream, START, now, hidden, hidden)

    def sources(self, settings_: FederationConfig) -> list[Source]:
        return [Source(u, list(self.feeds[u].values()), s.owns)
                for u, s in zip(UPSTREAMS, settings_.gateway.upstreams, strict=True)]  # fmt: skip


step = st.tuples(
    st.sampled_from(("change", "change", "add", "add", "remove", "drop", "drop", "time",
                     "stale", "hide", "nothing", "move")),
    st.sampled_from(UPSTREAMS), st.sampled_from(NAMES), st.sampled_from(VERSIONS),
    st.sampled_from(STATUSES), st.integers(0, 10_000),
)  # fmt: skip


Steps = list[tuple[str, str, str, str, str, int]]


def random_syncs(
    examples_: int, most: int
) -> Callable[[Callable[[FederationConfig, Syncs, Builder, Steps], None]], Any]:
    """A property over a config (look-alike owners or not, a cooldown or not), the
    upstreams' first entries and up to `most` random syncs after them: the test is given
    the config, the syncs, a builder and the steps."""

    def wrap(test: Callable[[FederationConfig, Syncs, Builder, Steps], None]) -> Any:
        @settings(max_examples=examples(examples_), deadline=None)
        @given(
            owns=st.booleans(),
            cooldown=st.booleans(),
            first=st.lists(st.tuples(st.sampled_from(UPSTREAMS), st.sampled_from(NAMES),
                                     st.sampled_from(VERSIONS), st.sampled_from(STATUSES)),
                           max_size=30),
            steps=st.lists(step, min_size=1, max_size=most),
        )  # fmt: skip
        def run(owns: bool, cooldown: bool, first: list[tuple[str, str, str, str]],
                steps: Steps) -> None:  # fmt: skip
            settings_ = config(owns, cooldown)
            test(settings_, Syncs(first), Builder(settings_), steps)

        run.__name__, run.__doc__ = test.__name__, test.__doc__
        return run

    return wrap


@random_syncs(80, 12)
def test_a_rebuild_in_part_is_the_whole_rebuild(
    settings_: FederationConfig, syncs: Syncs, builder: Builder, steps: Steps
) -> None:
    for one_step in [("nothing", "u0", "", "", "", 0), *steps]:
        syncs.step(*one_step)
        sources = syncs.sources(settings_)
        made = builder.build(sources, dict(syncs.origins), syncs.now)
        whole = Builder(settings_)
        same(made, whole.build(sources, dict(syncs.origins), syncs.now))
        for one in NAMES:
            assert builder.offers(one) == whole.offers(one), one


def test_a_lookalike_another_upstream_offers_is_served_once_the_owner_drops_it() -> None:
    """Three upstreams offer spellings of one identity; the owner drops it, takes it back,
    drops it again, and then the next owner drops it too: each time the next upstream that
    offers it serves it, as a whole build would, though those upstreams did not change."""
    settings_ = config(owns=False, cooldown=False)
    origins = {u: Origin(u, START) for u in UPSTREAMS}
    other = entry("dev.tools/eps", "1.0.0", "active", START, 2)
    u0 = [entry("com.example/alpha", "1.0.0", "active", START, 1), other]
    u1 = [entry("COM.EXAMPLE/Alpha", "2.0.0", "active", START, 3)]
    u2 = [entry("com.example./ALPHA", "3.0.0", "active", START, 4)]
    builder = Builder(settings_)
    served = []
    for first, second in ((u0, u1), ([other], u1), (u0, u1), ([other], u1), ([other], [])):
        sources = [Source("u0", first), Source("u1", second), Source("u2", u2)]
        made = builder.build(sources, origins, START)
        same(made, Builder(settings_).build(sources, origins, START))
        served.append(sorted(item.name for item in made.views["default"].every.items))
    assert builder.decided is not None  # made in part
    assert served == [
        ["com.example/alpha", "dev.tools/eps"], ["COM.EXAMPLE/Alpha", "dev.tools/eps"],
        ["com.example/alpha", "dev.tools/eps"], ["COM.EXAMPLE/Alpha", "dev.tools/eps"],
        ["com.example./ALPHA", "dev.tools/eps"],
    ]  # fmt: skip


def test_a_sync_that_changed_one_server_decides_only_that_server() -> None:
    settings_ = config(owns=False, cooldown=False)
    entries = [entry(f"dev.tools/s{i:03}", "1.0.0", "active", START, i) for i in range(300)]
    builder = Builder(settings_)
    origins = {u: Origin(u, START) for u in UPSTREAMS}
    sources = [Source("u0", entries), Source("u1", []), Source("u2", [])]
    builder.build(sources, origins, START)
    assert builder.decided is None  # the first build is whole
    changed = list(entries)
    changed[150] = entry("dev.tools/s150", "1.0.0", "active", START, 9999)
    changed.append(entry("dev.tools/s999", "1.0.0", "active", START, 1))
    sources = [Source("u0", changed), Source("u1", []), Source("u2", [])]
    made = builder.build(sources, origins, START)
    assert builder.decided == 2
    same(made, Builder(settings_).build(sources, origins, START))
    assert builder.build(sources, origins, START) is not None
    assert builder.decided == 0


def trusting(cooldown: bool = False) -> FederationConfig:
    """The config above, with an advisory feed: served entries say what it says, and two
    rules read it."""
    base = config(owns=True, cooldown=cooldown)
    rules = [{"deny": {"malicious": True}}, {"deny": {"severity": ">=high"}},
             *base.policy.model_dump(exclude_none=True)["rules"]]  # fmt: skip
    return base.model_copy(update={
        "policy": PolicySettings.model_validate(
            {**base.policy.model_dump(exclude_none=True), "rules": rules}),
        "trust": TrustSettings.model_validate(
            {"osv": [{"name": "osv", "file": "x", "ecosystems": ["npm"]}]}),
    })  # fmt: skip


def record(index: int, name: str, kind: str, moment: int) -> bytes:
    """An OSV record for a server's npm package (`@test/<name>`, as `server_entry` makes)."""
    events = {"malware": ({"introduced": "0"},), "all": ({"introduced": "0"},),
              "late": ({"introduced": "1.1.0"},)}[kind]  # fmt: skip
    ident = f"MAL-{index}" if kind == "malware" else f"GHSA-{index}"
    extra: dict[str, Any] = {"modified": f"2026-06-{1 + moment % 28:02}T00:00:00Z"}
    if kind != "malware" and index % 2:
        extra["severity"] = [{"type": "CVSS_V3",
                              "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]  # fmt: skip
    return osv(ident, "npm", f"@test/{name.split('/')[1]}", *events, **extra)


@settings(max_examples=examples(60), deadline=None)
@given(
    first=st.lists(st.tuples(st.sampled_from(UPSTREAMS), st.sampled_from(NAMES),
                             st.sampled_from(VERSIONS), st.sampled_from(STATUSES)),
                   min_size=1, max_size=30),
    feeds=st.lists(st.lists(st.tuples(st.sampled_from(NAMES),
                                      st.sampled_from(("malware", "all", "late"))),
                            max_size=6), min_size=1, max_size=5),
    syncs=st.lists(st.booleans(), min_size=5, max_size=5),
)  # fmt: skip
def test_a_rebuild_after_a_feed_refresh_in_part_is_the_whole_rebuild(
    first: list[tuple[str, str, str, str]], feeds: list[list[tuple[str, str]]],
    syncs: list[bool],
) -> None:  # fmt: skip
    """Each refresh of the advisory feed changes the records of some packages (and the feed's
    date): only their servers are decided again, and every build is what a whole build of
    the same data and feed gives, marks and `asOf` included."""
    settings_ = trusting()
    entries: dict[str, dict[tuple[str, str], Entry]] = {u: {} for u in UPSTREAMS}
    for index, (upstream, name, version, status) in enumerate(first):
        entries[upstream][(name, version)] = entry(name, version, status, START, index)
    origins = {u: Origin(u, START) for u in UPSTREAMS}
    builder = Builder(settings_)
    parts = 0
    for moment, (records, sync) in enumerate(zip(feeds, syncs, strict=False)):
        advisories = read_feed([record(i, n, k, moment) for i, (n, k) in enumerate(records)],
                               frozenset({"npm"}))  # fmt: skip
        if sync and entries["u0"]:  # a sync in the same build as the refresh
            key = sorted(entries["u0"])[moment % len(entries["u0"])]
            entries["u0"][key] = entry(*key, "active", START, 100 + moment)
        sources = [Source(u, list(entries[u].values()), s.owns)
                   for u, s in zip(UPSTREAMS, settings_.gateway.upstreams, strict=True)]  # fmt: skip
        made = builder.build(sources, origins, START, advisories=advisories)
        parts += builder.decided is not None
        same(made, Builder(settings_).build(sources, origins, START, advisories=advisories))
    assert parts == len(feeds) - 1  # every refresh but the first build is made in part


def test_a_feed_refresh_decides_only_the_servers_whose_records_changed() -> None:
    settings_ = trusting()
    entries = [entry(f"dev.tools/s{i:03}", "1.0.0", "active", START, i) for i in range(200)]
    sources = [Source("u0", entries), Source("u1", []), Source("u2", [])]
    origins = {u: Origin(u, START) for u in UPSTREAMS}
    builder = Builder(settings_)
    before = read_feed([record(2, "dev.tools/s010", "all", 0)], frozenset({"npm"}))
    builder.build(sources, origins, START, advisories=before)
    after = read_feed([record(2, "dev.tools/s010", "all", 1), record(4, "dev.tools/s020",
                                                                        "malware", 1)],
                      frozenset({"npm"}))  # fmt: skip
    made = builder.build(sources, origins, START, advisories=after)
    assert builder.decided == 1  # s020: s010's record is the same (only its date moved)
    same(made, Builder(settings_).build(sources, origins, START, advisories=after))
    served = {item.name: item for item in made.views["default"].every.items}
    assert "dev.tools/s020" not in served  # malware: denied
    body = made.views["default"].body(served["dev.tools/s010"])
    assert b'"advisories":{"state":"present"' in body
    assert b'"asOf":"2026-06-02T00:00:00Z"' in body  # the new feed's date, on a kept item


def zeta_sources(zeta: Entry) -> list[Source]:
    others = [entry(f"dev.tools/s{i:03}", "1.0.0", "active", START, i) for i in range(60)]
    return [Source("u0", [*others, zeta]), Source("u1", [], ("com.example/*",)),
            Source("u2", [])]  # fmt: skip


CLEAN = read_feed([record(1, "dev.tools/unrelated", "all", 0)], frozenset({"npm"}))
ZETA_MALWARE = read_feed(
    [record(1, "dev.tools/unrelated", "all", 0), record(5, "dev.tools/zeta", "malware", 1)],
    frozenset({"npm"}),
)
ORIGINS = {u: Origin(u, START) for u in UPSTREAMS}


def test_a_feed_refresh_whose_build_fails_is_decided_by_the_next_build(monkeypatch: Any) -> None:
    """The servers a refresh names stay to be decided until a build succeeds: a build that
    fails after the refresh leaves the next one to hide what the new feed says is malware."""
    sources = zeta_sources(entry("dev.tools/zeta", "1.0.0", "active", START, 7))
    builder = Builder(trusting())
    builder.build(sources, ORIGINS, START, advisories=CLEAN)
    real = builder.trust.mark
    failing = iter([True])

    def mark(one: Entry) -> Any:  # what the feed says of an entry: fails once
        if next(failing, False):
            raise MemoryError("a build that fails")
        return real(one)

    monkeypatch.setattr(builder.trust, "mark", mark)
    # zeta is malware now, and s010 has an advisory: its mark is made, and fails once
    records = ((5, "dev.tools/zeta", "malware"), (2, "dev.tools/s010", "all"))
    feed = read_feed([record(i, n, k, 1) for i, n, k in records], frozenset({"npm"}))
    with pytest.raises(MemoryError):
        builder.build(sources, ORIGINS, START, advisories=feed)
    made = builder.build(sources, ORIGINS, START, advisories=feed)
    same(made, Builder(trusting()).build(sources, ORIGINS, START, advisories=feed))
    assert "dev.tools/zeta" not in {item.name for item in made.views["default"].every.items}


@pytest.mark.skipif(
    compiled(),
    reason="the failure is injected by replacing a module global, "
    "which compiled modules bind when built: the pure-Python run tests this",
)
def test_a_build_that_fails_in_a_later_view_leaves_the_last_build_whole(monkeypatch: Any) -> None:
    settings_ = config(owns=False, cooldown=False)
    first = [entry(f"io.github.x/x-spam-{i}", "1.0.0", "active", START, i) for i in range(3)]
    builder = Builder(settings_)
    builder.build([Source("u0", first), Source("u1", []), Source("u2", [])], ORIGINS, START)
    second = [*first[:2], entry("io.github.x/x-spam-2", "1.0.0", "active", START, 99),
              entry("io.github.x/x-spam-3", "1.0.0", "active", START, 3)]  # fmt: skip
    sources = [Source("u0", second), Source("u1", []), Source("u2", [])]
    real = snapshot_module.ViewCatalog
    calls = iter(range(100))

    def catalog(*args: Any, **kwargs: Any) -> Any:
        if next(calls) == 1:  # the second view's
            raise MemoryError("a build that fails")
        return real(*args, **kwargs)

    monkeypatch.setattr(snapshot_module, "ViewCatalog", catalog)
    with pytest.raises(MemoryError):
        builder.build(sources, ORIGINS, START)
    monkeypatch.setattr(snapshot_module, "ViewCatalog", real)
    made = builder.build(sources, ORIGINS, START)
    same(made, Builder(settings_).build(sources, ORIGINS, START))


def test_an_equal_entry_that_is_another_object_is_decided_again() -> None:
    """Kept items are recognised by the same Entry objects, which what the feed said of them
    is remembered by: an equal copy is decided again, so a later refresh still finds it."""
    target = entry("dev.tools/zeta", "1.0.0", "active", START, 7)
    builder = Builder(trusting())
    builder.build(zeta_sources(target), ORIGINS, START, advisories=CLEAN)
    twin = entry("dev.tools/zeta", "1.0.0", "active", START, 7)
    assert twin == target
    assert twin is not target
    for _ in range(9):  # past the build that forgets what no upstream serves any more
        builder.build(zeta_sources(twin), ORIGINS, START, advisories=CLEAN)
    made = builder.build(zeta_sources(twin), ORIGINS, START, advisories=ZETA_MALWARE)
    assert builder.decided is not None
    same(made, Builder(trusting()).build(zeta_sources(twin), ORIGINS, START,
                                         advisories=ZETA_MALWARE))  # fmt: skip
    assert "dev.tools/zeta" not in {item.name for item in made.views["default"].every.items}


def test_the_table_of_suffixes_stays_bounded_while_builds_are_made_in_part() -> None:
    """Each refresh gives one server a new advisory: a key no item names any more is carried
    for a few builds at most."""
    sources = zeta_sources(entry("dev.tools/zeta", "1.0.0", "active", START, 7))
    builder = Builder(trusting())
    sizes = []
    for index in range(40):
        feed = read_feed([record(index, "dev.tools/zeta", "all", 0)], frozenset({"npm"}))
        made = builder.build(sources, ORIGINS, START, advisories=feed)
        assert builder.decided is not None or index == 0
        sizes.append(len(made.views["default"].suffixes))
    assert max(sizes[8:]) <= 12, sizes


def test_a_retired_builder_lets_go_of_its_kept_items() -> None:
    """`released.release` frees a retired builder's items a slice at a time: nothing the
    builder keeps for its next build holds them past it."""
    builder = Builder(config(owns=False, cooldown=False))
    entries = [entry(f"dev.tools/s{i:03}", "1.0.0", "active", START, i) for i in range(50)]
    builder.build([Source("u0", entries), Source("u1", []), Source("u2", [])], ORIGINS, START)
    kept = next(iter(builder._kept["default"].values()))
    before = sys.getrefcount(kept)
    release(None, builder)
    assert sys.getrefcount(kept) < before
    assert builder._increment is None
