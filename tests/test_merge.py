from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from gateway.entry import Entry, parse_item
from gateway.merge import Source, merge

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
    assert merged.shadowed == {"com.example/a": ["official"]}


def test_owns_reserves_names_even_before_the_owner_lists_them() -> None:
    merged = merge(
        [
            Source("official", [entry("com.example/new"), entry("io.github.x/b")]),
            Source("internal", [], owns=["com.example/*"]),
        ]
    )
    assert "com.example/new" not in merged.servers
    assert merged.shadowed == {"com.example/new": ["official"]}
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
