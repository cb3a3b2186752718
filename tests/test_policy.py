"""Policy rules and view decisions, as table tests and properties (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.catalog import Origin
from gateway.config import FederationConfig, GatewaySettings, PolicySettings, ViewSettings
from gateway.entry import Entry, parse_item
from gateway.merge import Source
from gateway.policy import Policy
from gateway.semver import VersionRange
from gateway.snapshot import build_snapshot
from gateway.view import ViewPolicy
from tests.conftest import examples
from tests.fakes import server_entry

NOW = datetime(2026, 6, 1, tzinfo=UTC)
NPM = {"registryType": "npm", "identifier": "x", "version": "1.0.0", "transport": {"type": "stdio"}}
MCPB = {"registryType": "mcpb", "identifier": "https://github.com/a/b.mcpb", "fileSha256": "0" * 64}
HTTP_PKG = {"registryType": "pypi", "identifier": "y", "transport": {"type": "streamable-http"}}
REMOTE = {"type": "sse", "url": "https://mcp.eu.atlassian.com/sse"}


def entry(name: str = "io.github.a/tool", version: str = "1.0.0", **extra: Any) -> Entry:
    published = extra.pop("published", "2026-01-01T00:00:00Z")
    return parse_item(server_entry(name, version, published=published, **extra), seen_at=NOW)


def policy(**settings: Any) -> Policy:
    return Policy(PolicySettings.model_validate(settings), "policy.yaml")


@pytest.mark.parametrize(
    ("match", "subject", "upstream", "matches"),
    [
        ({"name": "io.github.a/*"}, entry(), "official", True),
        ({"name": "io.github.b/*"}, entry(), "official", False),
        ({"name": ["x/*", "io.github.a/t??l"]}, entry(), "official", True),
        ({"upstream": "internal"}, entry(), "internal", True),
        ({"upstream": ["internal", "github"]}, entry(), "official", False),
        ({"status": "deprecated"}, entry(status="deprecated"), "o", True),
        ({"status": ["deleted"]}, entry(status="deprecated"), "o", False),
        ({"version": ">=0.20.0"}, entry(version="0.21.0"), "o", True),
        ({"version": ">=0.20.0"}, entry(version="0.19.9"), "o", False),
        ({"version": ">=1.2,<2"}, entry(version="1.9.9"), "o", True),
        ({"version": ">=1.2,<2"}, entry(version="2.0.0"), "o", False),
        ({"version": "1.0.0"}, entry(version="v1.0.0"), "o", True),
        ({"version": ">=1.0"}, entry(version="2025-10-15"), "o", False),  # non-semver
        ({"version": "2025-10-15"}, entry(version="2025-10-15"), "o", True),  # ...exact only
        ({"version": ["<1", ">=3"]}, entry(version="3.1.0"), "o", True),
        ({"registry_type": "mcpb"}, entry(packages=[NPM, MCPB]), "o", True),
        ({"registry_type": "oci"}, entry(packages=[NPM, MCPB]), "o", False),
        ({"transport": "stdio"}, entry(packages=[NPM]), "o", True),
        ({"transport": "streamable-http"}, entry(packages=[HTTP_PKG]), "o", True),
        ({"transport": "remote"}, entry(remotes=[REMOTE]), "o", True),
        ({"transport": "remote"}, entry(packages=[NPM]), "o", False),
        ({"transport": "local"}, entry(packages=[NPM]), "o", True),
        ({"transport": "sse"}, entry(remotes=[REMOTE]), "o", True),
        ({"remote_host": "*.atlassian.com"}, entry(remotes=[REMOTE]), "o", True),
        ({"remote_host": "atlassian.com"}, entry(remotes=[REMOTE]), "o", False),
        ({"name": "io.github.a/*", "status": "deprecated"}, entry(), "o", False),  # AND
        ({}, entry(), "o", True),  # no keys: matches everything
    ],
)
def test_match_keys(match: dict[str, Any], subject: Entry, upstream: str, matches: bool) -> None:
    verdict = policy(default="deny", rules=[{"allow": match}]).verdict(upstream, subject)
    assert verdict.allowed is matches
    assert verdict.rule == ("policy.yaml rules[0]" if matches else "policy.yaml default")


def test_first_matching_rule_decides() -> None:
    rules = [
        {"deny": {"status": "deprecated"}},
        {"allow": {"name": "io.github.a/*"}},
        {"deny": {"name": "*"}},
    ]
    p = policy(default="allow", rules=rules)
    assert p.verdict("o", entry(status="deprecated")).rule == "policy.yaml rules[0]"
    assert p.verdict("o", entry()).rule == "policy.yaml rules[1]"
    assert p.verdict("o", entry()).allowed
    assert not p.verdict("o", entry(name="io.github.z/x")).allowed


@pytest.mark.parametrize(("default", "allowed"), [("allow", True), ("deny", False)])
def test_default(default: str, allowed: bool) -> None:
    assert policy(default=default).verdict("o", entry()).allowed is allowed


@pytest.mark.parametrize(
    ("published", "served"),
    [
        (NOW - timedelta(hours=72, seconds=1), True),
        (NOW - timedelta(hours=72), True),  # exactly old enough
        (NOW - timedelta(hours=71, minutes=59), False),
        (NOW + timedelta(hours=1), False),
    ],
)
def test_cooldown_edges(published: datetime, served: bool) -> None:
    view = ViewPolicy.of("default", PolicySettings(min_age="72h"), None)  # type: ignore[arg-type]
    stamp = published.strftime("%Y-%m-%dT%H:%M:%SZ")
    decision = view.decide("o", entry(published=stamp), NOW)
    assert decision.served is served
    if not served:
        assert decision.reason == "cooldown"
        assert decision.held_until == published + timedelta(hours=72)


def test_view_cooldown_is_the_longer_one() -> None:
    view = ViewPolicy.of(
        "p",
        PolicySettings(min_age="1h"),  # type: ignore[arg-type]
        ViewSettings(min_age="7d"),  # type: ignore[arg-type]
    )
    decision = view.decide("o", entry(published="2026-05-30T00:00:00Z"), NOW)
    assert decision.reason == "cooldown"
    assert decision.held_until == datetime(2026, 6, 6, tzinfo=UTC)


def test_package_types_remove_packages_and_drop_what_is_left_empty() -> None:
    view = ViewPolicy.of("v", PolicySettings.model_validate({"packages": {"types": ["npm"]}}), None)
    mixed = view.decide("o", entry(packages=[NPM, MCPB]), NOW)
    assert mixed.served
    assert mixed.server is not None
    assert mixed.server["packages"] == [NPM]
    assert mixed.removed_types == ("mcpb",)
    only_mcpb = view.decide("o", entry(packages=[MCPB]), NOW)
    assert (only_mcpb.served, only_mcpb.reason) == (False, "not installable")
    remote_kept = view.decide("o", entry(packages=[MCPB], remotes=[REMOTE]), NOW)
    assert remote_kept.served
    assert remote_kept.server is not None
    assert remote_kept.server["remotes"] == [REMOTE]


def test_view_types_intersect_with_policy_types() -> None:
    base = PolicySettings.model_validate({"packages": {"types": ["npm", "mcpb"]}})
    own = ViewSettings.model_validate({"packages": {"types": ["mcpb", "oci"]}})
    decision = ViewPolicy.of("v", base, own).decide("o", entry(packages=[NPM, MCPB]), NOW)
    assert decision.server is not None
    assert decision.server["packages"] == [MCPB]


def test_view_only_narrows() -> None:
    base = PolicySettings.model_validate(
        {"default": "deny", "rules": [{"allow": {"name": "a.b/*"}}]}
    )
    own = ViewSettings.model_validate({"default": "allow"})
    view = ViewPolicy.of("v", base, own)
    denied = view.decide("o", entry(name="x.y/z"), NOW)
    assert (denied.served, denied.rules) == (False, ("policy.yaml default",))
    allowed = view.decide("o", entry(name="a.b/c"), NOW)
    assert allowed.rules == ("policy.yaml rules[0]", "views/v.yaml default")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"rules": [{"allow": {"nmae": "x/*"}}]}, "rules.0.allow.nmae"),
        ({"rules": [{"allow": {"name": "x/*"}, "deny": {"name": "y/*"}}]}, "exactly one"),
        ({"rules": [{}]}, "exactly one"),
        ({"rules": [{"allow": {"version": ">=1.x"}}]}, "not a version range"),
        ({"rules": [{"allow": {"name": "bad glob with spaces"}}]}, "not a name glob"),
        ({"rules": [{"allow": {"transport": "carrier-pigeon"}}]}, "transport"),
        ({"min_age": "a while"}, "not a duration"),
    ],
)
def test_bad_policy_documents(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        PolicySettings.model_validate(document)
    text = str(caught.value)
    assert message in text or message in ".".join(
        str(part) for error in caught.value.errors() for part in error["loc"]
    )


def test_version_range_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="not a version range"):
        VersionRange(">=banana")


# Properties ---------------------------------------------------------------------------------

names = st.sampled_from(["io.github.a/x", "io.github.b/y", "com.example/z", "io.github.a/w"])
versions = st.sampled_from(["1.0.0", "1.1.0", "2.0.0", "2.0.0-rc.1", "2025-01-01"])
statuses = st.sampled_from(["active", "deprecated", "deleted"])
entries = st.lists(
    st.builds(lambda n, v, s: entry(n, v, status=s), names, versions, statuses), max_size=12
)
matches = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["io.github.a/*", "com.example/*", "*"]),
        "status": statuses,
        "version": st.sampled_from([">=1.1", "<2", "1.0.0", "2025-01-01"]),
        "upstream": st.sampled_from(["one", "two"]),
    },
)
rules = st.lists(
    st.one_of(
        st.builds(lambda m: {"allow": m}, matches), st.builds(lambda m: {"deny": m}, matches)
    ),
    max_size=4,
)


def _config(policy_doc: dict[str, Any], view_doc: dict[str, Any]) -> FederationConfig:
    return FederationConfig(
        directory=".",  # type: ignore[arg-type]
        gateway=GatewaySettings.model_validate({"upstreams": [{"name": "one", "file": "x"}]}),
        policy=PolicySettings.model_validate(policy_doc),
        views={"unit": ViewSettings.model_validate(view_doc)},
    )


def _served(config: FederationConfig, upstream_entries: list[Entry]) -> dict[str, set[Any]]:
    sources = [Source("one", upstream_entries)]
    snapshot = build_snapshot(config, sources, {"one": Origin("one", NOW)}, NOW)
    return {name: {i.key for i in view.every.items} for name, view in snapshot.views.items()}


@settings(max_examples=examples(150), deadline=None)
@given(entries, rules, rules, st.sampled_from(["allow", "deny"]), matches)
def test_adding_a_deny_rule_never_adds_an_entry_anywhere(
    data: list[Entry], base_rules: Any, view_rules: Any, default: str, extra: Any
) -> None:
    before = _served(
        _config({"default": default, "rules": base_rules}, {"rules": view_rules}), data
    )
    for position in (0, len(base_rules)):
        denied = [*base_rules[:position], {"deny": extra}, *base_rules[position:]]
        after = _served(_config({"default": default, "rules": denied}, {"rules": view_rules}), data)
        for view in before:
            assert after[view] <= before[view]


@settings(max_examples=examples(150), deadline=None)
@given(
    entries, rules, rules, st.sampled_from(["allow", "deny"]), st.sampled_from(["allow", "deny"])
)
def test_a_view_never_serves_what_the_default_view_does_not(
    data: list[Entry], base_rules: Any, view_rules: Any, default: str, view_default: str
) -> None:
    served = _served(
        _config(
            {"default": default, "rules": base_rules},
            {"default": view_default, "rules": view_rules},
        ),
        data,
    )
    assert served["unit"] <= served["default"]


@settings(max_examples=examples(60), deadline=None)
@given(entries, entries, rules, rules)
def test_a_warm_rebuild_serves_what_a_cold_build_serves(
    first: list[Entry], second: list[Entry], base_rules: Any, view_rules: Any
) -> None:
    """The builder remembers per-entry work between builds; that must never change a byte."""
    from gateway.snapshot import Builder

    config = _config({"rules": base_rules, "min_age": "1d"}, {"rules": view_rules})
    builder = Builder(config)
    origins = {"one": Origin("one", NOW)}
    builder.build([Source("one", first)], origins, NOW)
    kept = first[: len(first) // 2] + second  # some entries stay (same objects), some are new
    # The upstream is stale now: every kept item must say so.
    stale = {"one": Origin("one", NOW, stale_since=NOW)}
    warm = builder.build([Source("one", kept)], stale, NOW)
    cold = build_snapshot(config, [Source("one", kept)], stale, NOW)
    assert warm.hidden == cold.hidden
    for name, view in cold.views.items():
        warm_view = warm.views[name]
        assert [warm_view.body(i) for i in warm_view.every.items] == [
            view.body(i) for i in view.every.items
        ]


@settings(max_examples=examples(150), deadline=None)
@given(entries, rules, st.sampled_from(["allow", "deny"]), st.sampled_from(["one", "two"]))
def test_a_policy_decides_an_entry_alike_whatever_it_decided_before(
    data: list[Entry], policy_rules: Any, default: str, upstream: str
) -> None:
    """Rules are narrowed per name and remembered: the order of questions must not matter."""
    settings_ = PolicySettings.model_validate({"default": default, "rules": policy_rules})
    shared = Policy(settings_, "policy.yaml")
    for one in [*data, *reversed(data)]:
        fresh = Policy(settings_, "policy.yaml")
        assert shared.verdict(upstream, one) == fresh.verdict(upstream, one)
    shared.forget({data[0].name} if data else set())  # the other names are asked afresh
    for one in data:
        assert shared.verdict(upstream, one) == Policy(settings_, "policy.yaml").verdict(
            upstream, one
        )


def _bodies(snapshot: Any) -> dict[str, list[bytes]]:
    return {
        name: [view.body(item) for item in view.every.items]
        for name, view in snapshot.views.items()
    }


def test_a_reload_keeps_the_items_of_the_views_it_did_not_touch() -> None:
    from gateway.snapshot import Builder

    data = [entry("io.github.a/x", "1.0.0"), entry("io.github.b/y", "2.0.0"), entry("c.d/z", "1")]
    sources, origins = [Source("one", data)], {"one": Origin("one", NOW)}
    before = _config({"rules": [{"deny": {"name": "c.d/*"}}]}, {"rules": []})
    builder = Builder(before)
    first = builder.build(sources, origins, NOW)
    narrower = _config(
        {"rules": [{"deny": {"name": "c.d/*"}}]}, {"rules": [{"deny": {"name": "io.github.b/*"}}]}
    )
    successor = builder.succeeded_by(narrower)
    second = successor.build(sources, origins, NOW)
    assert _bodies(second) == _bodies(build_snapshot(narrower, sources, origins, NOW))
    kept = first.views["default"].every.items
    assert all(a is b for a, b in zip(second.views["default"].every.items, kept, strict=True))
    assert len(second.views["unit"].every.items) == 1  # decided anew under its new rules
    renamed = narrower.model_copy(
        update={"gateway": narrower.gateway.model_copy(update={"meta_namespace": "org.other.gw"})}
    )
    third = successor.succeeded_by(renamed).build(sources, origins, NOW)
    assert _bodies(third) == _bodies(build_snapshot(renamed, sources, origins, NOW))
    assert b'"org.other.gw":' in third.views["default"].body(third.views["default"].every.items[0])


glob_text = st.text(st.sampled_from("ab.-/*?[]"), min_size=1, max_size=8)
name_part = st.text(st.sampled_from("ab.-"), min_size=1, max_size=4)
name_text = st.builds(lambda space, name: f"{space}/{name}", name_part, name_part)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(glob_text, min_size=1, max_size=5), st.lists(name_text, max_size=15))
def test_name_globs_matched_for_all_names_at_once_decide_as_one_by_one(
    globs: list[str], new_names: list[str]
) -> None:
    """A build matches every new name against the globs in one search per rule (`prepare`);
    the verdicts are those of matching each name on its own, brackets and leading `*` too."""
    doc = {"default": "allow", "rules": [{"deny": {"name": glob}} for glob in globs]}
    try:
        settings_ = PolicySettings.model_validate(doc)
    except ValueError:
        return  # not a glob the config accepts
    prepared = Policy(settings_, "policy.yaml")
    prepared.prepare(sorted(set(new_names)))
    for name in new_names:
        one = entry(name, "1.0.0")
        assert prepared.verdict("one", one) == Policy(settings_, "policy.yaml").verdict("one", one)
