from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from gateway.entry import Entry, parse_item
from gateway.merge import Source, merge
from gateway.names import identity, matches_any

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def entry(name: str, version: str = "1.0.0") -> Entry:
    return parse_item({"name": name, "version": version}, seen_at=NOW)


def test_first_upstream_that_has_a_name_owns_it() -> None:
    merged = merge(
        [
            Source("internal", [entry("com.example/a", "2.0.0")]),
            Source("official", [entry("com.example/a", "9.0.0"), entry("io.github.x/b")]),
        ]
    )
    upstream, entries = merged.servers["com.example/a"]
    assert upstream == "internal"
    assert [e.version for e in entries] == ["2.0.0"]  # the public 9.0.0 never leaks in
    assert merged.servers["io.github.x/b"][0] == "official"
    assert [s.upstream for s in merged.shadowed["com.example/a"]] == ["official"]


def test_owns_reserves_names_even_before_the_owner_lists_them() -> None:
    merged = merge(
        [
            Source("official", [entry("com.example/new"), entry("io.github.x/b")]),
            Source("internal", [], owns=["com.example/*"]),
        ]
    )
    assert "com.example/new" not in merged.servers
    assert [(s.upstream, s.by, s.reserved) for s in merged.shadowed["com.example/new"]] == [
        ("official", "internal", True)
    ]
    assert "io.github.x/b" in merged.servers


def test_owner_serves_its_reserved_names_from_any_position() -> None:
    merged = merge(
        [
            Source("official", [entry("com.example/a", "9.9.9")]),
            Source("internal", [entry("com.example/a", "1.0.0")], owns=["com.example/*"]),
        ]
    )
    assert merged.servers["com.example/a"][0] == "internal"
    assert [e.version for e in merged.servers["com.example/a"][1]] == ["1.0.0"]


names = st.sampled_from(["a.b/c", "a.b/d", "x.y/z", "com.example/a", "com.example/b"])
versions = st.sampled_from(["1.0.0", "1.1.0", "2.0.0"])
source_entries = st.lists(st.builds(entry, names, versions), max_size=8)


@given(st.lists(source_entries, min_size=1, max_size=4))
def test_merge_respects_precedence_and_is_idempotent(groups: list[list[Entry]]) -> None:
    sources = [Source(f"u{i}", entries) for i, entries in enumerate(groups)]
    merged = merge(sources)
    for name, (upstream, served) in merged.servers.items():
        first = next(s.upstream for s in sources if any(e.name == name for e in s.entries))
        assert upstream == first
        assert all(e.name == name for e in served)
    # Merging the merged result again changes nothing.
    again = merge([Source(u, es) for u, es in merged.servers.values()])
    assert {n: [e.key for e in es] for n, (_, es) in again.servers.items()} == {
        n: [e.key for e in es] for n, (_, es) in merged.servers.items()
    }


# Look-alikes: one identity, many spellings (case, trailing namespace dots, separator runs).
LOOKALIKES = [
    "com.example/foo-bar",
    "COM.EXAMPLE/foo-bar",
    "com.Example/Foo_Bar",
    "com.example./foo.bar",
    "com.example/foo--bar",
]


def test_a_lower_upstream_cannot_serve_a_lookalike_of_a_higher_upstreams_name() -> None:
    merged = merge(
        [
            Source("internal", [entry("com.example/foo-bar", "1.0.0")]),
            Source("official", [entry(name, "9.9.9") for name in LOOKALIKES[1:]]),
        ]
    )
    assert list(merged.servers) == ["com.example/foo-bar"]
    shadows = merged.shadowed["com.example/foo-bar"]
    assert sorted(s.name for s in shadows) == sorted(LOOKALIKES[1:])
    assert {(s.by, s.spelled) for s in shadows} == {("internal", "com.example/foo-bar")}


def test_owns_reserves_every_lookalike_of_its_names() -> None:
    merged = merge(
        [
            Source("official", [entry(n) for n in ("COM.EXAMPLE/foo", "com.Example/foo",
                                                   "com.example./foo", "io.github.x/b")]),
            Source("internal", [], owns=["com.example/*"]),
        ]
    )  # fmt: skip
    assert list(merged.servers) == ["io.github.x/b"]
    assert len(merged.shadowed["com.example/foo"]) == 3


def test_lookalikes_from_the_owning_upstream_are_all_served_and_noted() -> None:
    merged = merge([Source("official", [entry("io.github.a/tool"), entry("IO.GITHUB.A/Tool")])])
    assert sorted(merged.servers) == ["IO.GITHUB.A/Tool", "io.github.a/tool"]
    assert merged.lookalikes("io.github.a/tool") == ["io.github.a/tool", "IO.GITHUB.A/Tool"]
    assert merged.lookalikes("io.github.x/other") == []


spelled = st.sampled_from([*LOOKALIKES, "io.github.x/y", "IO.GITHUB.X/Y", "io.github.x/z"])
lookalike_entries = st.lists(st.builds(entry, spelled, versions), max_size=8)


@given(
    st.lists(lookalike_entries, min_size=1, max_size=4),
    st.lists(st.sampled_from(["com.example/*", "io.github.x/y", "IO.*/Z"]), max_size=2),
    st.integers(0, 3),
)
def test_one_identity_belongs_to_one_upstream(
    groups: list[list[Entry]], owns: list[str], owner: int
) -> None:
    sources = [
        Source(f"u{i}", entries, owns if i == owner else ()) for i, entries in enumerate(groups)
    ]
    merged = merge(sources)
    holders: dict[str, set[str]] = {}
    for name, (upstream, served) in merged.servers.items():
        holders.setdefault(identity(name), set()).add(upstream)
        assert all(e.name == name for e in served)  # served byte for byte as sent
        source = next(s for s in sources if s.upstream == upstream)
        assert [e.key for e in served] == [e.key for e in source.entries if e.name == name]
    assert all(len(upstreams) == 1 for upstreams in holders.values())
    for ident, upstreams in holders.items():
        reserving = [s.upstream for s in sources if s.owns and matches_any(ident, s.owns)]
        having = [s.upstream for s in sources if any(e.identity == ident for e in s.entries)]
        assert upstreams == {(reserving or having)[0]}
