"""Mirror rewrites: table tests per registry type, and the property that only locations change."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from gateway.config import MirrorSettings, PolicySettings, VerifySettings, ViewSettings
from gateway.entry import Splice, json_bytes, parse_item, with_packages
from gateway.locations import decoded
from gateway.mirrors import Mirrors, rewrite_packages
from gateway.registries.oci import OciReference
from gateway.shapes import Shapes
from gateway.view import ViewPolicy
from tests.fakes import server_entry

NOW = datetime(2026, 6, 1, tzinfo=UTC)
MIRRORS = MirrorSettings.model_validate(
    {
        "npm": "https://art.example.com/api/npm/npm-remote/",
        "pypi": [
            {"match": "acme-*", "url": "https://art.example.com/api/pypi/internal/simple/"},
            {"match": "acme-special", "url": "https://never.example.com/simple/"},
            {"url": "https://art.example.com/api/pypi/remote/simple/"},
        ],
        "nuget": "https://nexus.example.com/repository/nuget-proxy/index.json",
        "cargo": "https://art.example.com/api/cargo/crates/index/",
        "go": "https://art.example.com/api/go/go-remote",
        "maven": [
            {"match": "com.acme:*", "url": "https://nexus.example.com/repository/maven-internal/"},
            {"url": "https://nexus.example.com/repository/maven-central/"},
        ],
        "oci": {
            "docker.io": "registry.example.com/dockerhub",
            "ghcr.io": "registry.example.com/ghcr",
        },
        "mcpb": {
            "https://github.com/": "https://art.example.com/github-releases/",
            "https://github.com/acme/": "https://art.example.com/acme-releases/",
        },
    }
)


def pkg(registry_type: str, identifier: str, **extra: Any) -> dict[str, Any]:
    return {"registryType": registry_type, "identifier": identifier, **extra}


@pytest.mark.parametrize(
    ("package", "expected"),
    [
        (pkg("npm", "@acme/weather", version="1.0.0"), {"registryBaseUrl": "https://art.example.com/api/npm/npm-remote/"}),
        (pkg("npm", "x", registryBaseUrl="https://registry.npmjs.org"), {"registryBaseUrl": "https://art.example.com/api/npm/npm-remote/"}),
        (pkg("pypi", "acme-tools"), {"registryBaseUrl": "https://art.example.com/api/pypi/internal/simple/"}),
        (pkg("pypi", "acme-special"), {"registryBaseUrl": "https://art.example.com/api/pypi/internal/simple/"}),  # first match wins
        (pkg("pypi", "requests-mcp"), {"registryBaseUrl": "https://art.example.com/api/pypi/remote/simple/"}),
        (pkg("nuget", "Contoso.Mcp"), {"registryBaseUrl": "https://nexus.example.com/repository/nuget-proxy/index.json"}),
        (pkg("cargo", "ripgrep-mcp"), {"registryBaseUrl": "https://art.example.com/api/cargo/crates/index/"}),
        (pkg("go", "github.com/acme/weather", version="v1.2.0", registryBaseUrl="https://proxy.golang.org"), {"registryBaseUrl": "https://art.example.com/api/go/go-remote"}),
        (pkg("maven", "com.acme:weather-mcp", version="1.2.0"), {"registryBaseUrl": "https://nexus.example.com/repository/maven-internal/"}),
        (pkg("maven", "org.example:tool", registryBaseUrl="https://repo1.maven.org/maven2"), {"registryBaseUrl": "https://nexus.example.com/repository/maven-central/"}),
        (pkg("oci", "ghcr.io/acme/weather:1.2.0"), {"identifier": "registry.example.com/ghcr/acme/weather:1.2.0"}),
        (pkg("oci", "acme/weather:1.2.0"), {"identifier": "registry.example.com/dockerhub/acme/weather:1.2.0"}),
        (pkg("oci", "nginx:latest"), {"identifier": "registry.example.com/dockerhub/library/nginx:latest"}),
        (pkg("oci", "index.docker.io/acme/w"), {"identifier": "registry.example.com/dockerhub/acme/w"}),
        (pkg("oci", "ghcr.io/acme/w@sha256:" + "a" * 64), {"identifier": "registry.example.com/ghcr/acme/w@sha256:" + "a" * 64}),
        (pkg("oci", "quay.io/acme/w:1"), None),  # no rule for quay.io
        (pkg("oci", "acme/w", registryBaseUrl="https://docker.io", version="2.0"), {"identifier": "registry.example.com/dockerhub/acme/w:2.0"}),
        (pkg("mcpb", "https://github.com/x/y/releases/download/v1/y.mcpb", fileSha256="f" * 64), {"identifier": "https://art.example.com/github-releases/x/y/releases/download/v1/y.mcpb"}),
        (pkg("mcpb", "https://github.com/acme/y/releases/download/v1/y.mcpb"), {"identifier": "https://art.example.com/acme-releases/y/releases/download/v1/y.mcpb"}),  # longest prefix
        (pkg("mcpb", "https://github.com/x/../../etc/passwd"), None),  # may not climb out
        (pkg("mcpb", "https://gitlab.com/x/y.mcpb"), None),
        (pkg("gem", "rails-mcp"), None),  # unknown types are data, not errors
    ],
)  # fmt: skip
def test_rewrite_table(package: dict[str, Any], expected: dict[str, Any] | None) -> None:
    result = Mirrors(MIRRORS).rewrite(copy.deepcopy(package))
    if expected is None:
        assert not result.mirrored
        assert result.package == package
        return
    assert result.mirrored
    assert {k: result.package.get(k) for k in expected} == expected
    assert "registryBaseUrl" not in result.package or package["registryType"] != "oci"
    changed = {
        k for k in package.keys() | result.package.keys() if package.get(k) != result.package.get(k)
    }
    assert changed <= {"registryBaseUrl", "identifier"}
    assert result.original is not None
    for key, value in result.original.items():
        assert package.get(key) == value  # what was replaced, recorded as it was


def test_mcpb_keeps_its_sha() -> None:
    package = pkg("mcpb", "https://github.com/x/y.mcpb", fileSha256="f" * 64)
    assert Mirrors(MIRRORS).rewrite(package).package["fileSha256"] == "f" * 64


@pytest.mark.parametrize(
    ("reference", "host", "repository", "tag"),
    [
        ("ghcr.io/a/b:1", "ghcr.io", "a/b", "1"),
        ("a/b", "docker.io", "a/b", "latest"),
        ("redis", "docker.io", "library/redis", "latest"),
        ("localhost:5000/a/b@sha256:00", "localhost:5000", "a/b", "sha256:00"),
        ("registry-1.docker.io/a/b:2", "docker.io", "a/b", "2"),
    ],
)
def test_oci_reference(reference: str, host: str, repository: str, tag: str) -> None:
    parsed = OciReference.parse(reference)
    assert parsed is not None
    assert (parsed.host, parsed.repository, parsed.reference) == (host, repository, tag)


def test_oci_reference_rejects_nonsense() -> None:
    assert OciReference.parse("ghcr.io/UPPER/Case:1") is None
    assert OciReference.parse("ghcr.io/a/../b:1") is None


PACKAGES = [pkg("npm", "a", version="1"), pkg("gem", "b"), pkg("oci", "quay.io/c/d:1")]


@pytest.mark.parametrize(
    ("mode", "kept", "dropped", "drop_server"),
    [
        ("keep", ["npm", "gem", "oci"], [], False),
        ("drop-package", ["npm"], ["gem", "oci"], False),
        ("drop-server", [], ["gem"], True),
    ],
)
def test_unmirrored_modes(
    mode: str, kept: list[str], dropped: list[str], drop_server: bool
) -> None:
    settings = MIRRORS.model_copy(update={"unmirrored": mode})
    result = rewrite_packages(Mirrors(settings), copy.deepcopy(PACKAGES))
    assert [p["registryType"] for p in result.packages] == kept
    assert result.dropped == dropped
    assert result.drop_server is drop_server


def test_per_view_mirrors_override_only_what_they_name() -> None:
    own = ViewSettings.model_validate({"mirrors": {"npm": "https://art.example.com/payments-npm/"}})
    view = ViewPolicy.of("payments", PolicySettings(), own, MIRRORS)
    base = ViewPolicy.of("default", PolicySettings(), None, MIRRORS)
    entry = parse_item(
        server_entry("io.github.a/b", "1.0.0", packages=[pkg("npm", "x"), pkg("pypi", "acme-y")]),
        seen_at=NOW,
    )
    in_view, in_base = view.decide("o", entry, NOW), base.decide("o", entry, NOW)
    assert in_view.server is not None
    assert in_base.server is not None
    assert (
        in_view.server["packages"][0]["registryBaseUrl"] == "https://art.example.com/payments-npm/"
    )
    assert (
        in_base.server["packages"][0]["registryBaseUrl"]
        == "https://art.example.com/api/npm/npm-remote/"
    )
    assert in_view.server["packages"][1] == in_base.server["packages"][1]  # pypi inherited
    assert in_view.packages[0]["original"] == {"registryBaseUrl": None}


def test_views_share_a_shape_only_where_their_mirrors_agree() -> None:
    own = ViewSettings.model_validate({"mirrors": {"npm": "https://art.example.com/payments-npm/"}})
    views = view_policies_of(own)
    pypi_only = parse_item(
        server_entry("io.github.a/p", "1.0.0", packages=[pkg("pypi", "acme-y")]), seen_at=NOW
    )
    with_npm = parse_item(
        server_entry("io.github.a/n", "1.0.0", packages=[pkg("npm", "x")]), seen_at=NOW
    )
    base, payments = (view.decide("o", pypi_only, NOW) for view in views)
    assert base.server_json is payments.server_json  # one rewrite, one bytes object
    base, payments = (view.decide("o", with_npm, NOW) for view in views)
    assert base.server is not None
    assert payments.server is not None
    assert base.server["packages"] != payments.server["packages"]
    assert payments.server["packages"][0]["registryBaseUrl"].endswith("/payments-npm/")


def test_a_registry_type_named_like_a_setting_is_just_unmirrored() -> None:
    views = view_policies_of(None)
    for kind in ("model_dump", "verify", "unmirrored", "__class__"):
        entry = parse_item(
            server_entry("io.github.a/b", "1.0.0", packages=[pkg(kind, "x")]), seen_at=NOW
        )
        decision = views[0].decide("o", entry, NOW)
        assert (decision.served, decision.packages) == (True, ())  # kept as is, not rewritten


def view_policies_of(own: ViewSettings | None) -> list[ViewPolicy]:
    """The default view and a `payments` view sharing one shape store, as a build has them."""
    views = [
        ViewPolicy.of("default", PolicySettings(), None, MIRRORS),
        ViewPolicy.of("payments", PolicySettings(), own, MIRRORS),
    ]
    shapes = Shapes()
    for view in views:
        view.share(shapes)
    return views


def test_drop_server_hides_the_version_and_says_why() -> None:
    settings = MIRRORS.model_copy(update={"unmirrored": "drop-server"})
    view = ViewPolicy.of("v", PolicySettings(), None, settings)
    entry = parse_item(
        server_entry("io.github.a/b", "1.0.0", packages=[pkg("gem", "x")]), seen_at=NOW
    )
    decision = view.decide("o", entry, NOW)
    assert (decision.served, decision.reason) == (False, "unmirrored")


def test_rewrite_never_touches_name_or_remotes() -> None:
    remotes = [{"type": "streamable-http", "url": "https://mcp.github.com/mcp"}]
    entry = parse_item(
        server_entry(
            "io.github.a/b", "1.0.0", packages=[pkg("oci", "ghcr.io/a/b:1")], remotes=remotes
        ),
        seen_at=NOW,
    )
    decision = ViewPolicy.of("v", PolicySettings(), None, MIRRORS).decide("o", entry, NOW)
    assert decision.server is not None
    assert decision.server["name"] == "io.github.a/b"
    assert decision.server["remotes"] == remotes
    assert (
        entry.server["packages"][0]["identifier"] == "ghcr.io/a/b:1"
    )  # the upstream's copy untouched


identifiers = st.one_of(
    st.sampled_from(["@acme/weather", "acme-tools", "Contoso.Mcp", "ripgrep", "a"]),
    st.builds(lambda h, r, t: f"{h}{r}{t}", st.sampled_from(["", "ghcr.io/", "docker.io/", "quay.io/"]),
              st.sampled_from(["acme/w", "redis", "a/b/c"]), st.sampled_from(["", ":1", ":latest", "@sha256:" + "b" * 64])),
    st.builds(lambda p: f"https://github.com/{p}", st.sampled_from(["x/y.mcpb", "acme/z/v1/z.mcpb"])),
)  # fmt: skip
packages = st.fixed_dictionaries(
    {
        "registryType": st.sampled_from(["npm", "pypi", "nuget", "cargo", "oci", "mcpb", "gem"]),
        "identifier": identifiers,
    },
    optional={
        "version": st.sampled_from(["1.0.0", "2.0"]),
        "registryBaseUrl": st.sampled_from(
            ["https://registry.npmjs.org", "https://pypi.org/simple"]
        ),
        "fileSha256": st.just("c" * 64),
        "transport": st.just({"type": "stdio"}),
        "runtimeHint": st.sampled_from(["npx", "uvx", "docker"]),
        "environmentVariables": st.just([{"name": "TOKEN", "isSecret": True}]),
    },
)


@given(st.lists(packages, min_size=1, max_size=4))
def test_rewrite_changes_only_location_fields(original: list[dict[str, Any]]) -> None:
    result = rewrite_packages(Mirrors(MIRRORS), copy.deepcopy(original))
    assert len(result.packages) == len(original)  # unmirrored: keep
    for before, after, recorded in zip(original, result.packages, result.originals, strict=True):
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        assert changed <= {"registryBaseUrl", "identifier"}
        if changed:
            assert recorded is not None
            assert all(before.get(k) == v for k, v in recorded.items())
        if before["registryType"] != "oci":
            assert (
                after.get("identifier") == before["identifier"] or before["registryType"] == "mcpb"
            )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.lists(st.fixed_dictionaries({"registryType": st.sampled_from(["npm", "pypi"]), "identifier": st.text(max_size=6)}), max_size=3),
    st.dictionaries(st.sampled_from(["custom", "packages", "x", "y"]), json_values, max_size=3),
    st.lists(st.fixed_dictionaries({"registryType": st.just("npm"), "identifier": st.text(max_size=6)}), max_size=2),
)  # fmt: skip
def test_a_spliced_server_is_byte_for_byte_the_rewritten_server(
    packages: list[dict[str, Any]], extra: dict[str, Any], new: list[dict[str, Any]]
) -> None:
    """Splicing into the entry's bytes must equal serializing the rewritten server, even when
    a nested object carries a look-alike `packages` array."""
    extra.pop("packages", None)
    look_alike = {"nested": {"packages": packages}} if packages else {}
    server = {"name": "io.github.a/b", "version": "1", **extra, **look_alike, "packages": packages}
    entry = parse_item(server, seen_at=NOW)
    spliced = with_packages(entry, entry.server, new)
    assert json_bytes(spliced) == orjson.dumps({**entry.server, "packages": new})


def test_a_rewrite_keeps_the_entry_bytes_and_adds_only_the_array() -> None:
    entry = parse_item(
        server_entry("io.github.a/b", "1.0.0", packages=[pkg("npm", "x")], description="d" * 500),
        seen_at=NOW,
    )
    decision = ViewPolicy.of("v", PolicySettings(), None, MIRRORS).decide("o", entry, NOW)
    assert isinstance(decision.server_json, Splice)
    assert decision.server_json.whole is entry.server_json  # not a copy
    assert len(decision.server_json.middle) < 200


REMOTE = {"type": "streamable-http", "url": "https://mcp.example.com/mcp"}
SHAPED_ENTRIES = [
    {"packages": [pkg("npm", "x")]},
    {"packages": [pkg("npm", "x", registryBaseUrl="https://art.example.com/api/npm/npm-remote/")]},
    {"packages": [pkg("npm", "x"), pkg("mcpb", "https://github.com/a/b/releases/b.mcpb")]},
    {"packages": [pkg("mcpb", "https://downloads.example.org/b.mcpb")]},  # no mirror matches
    {"packages": [pkg("oci", "ghcr.io/acme/weather:1.2.0"), pkg("cargo", "c")]},
    {"packages": [pkg("cargo", "c")], "remotes": [REMOTE]},
    {"packages": ["not an object"]},
    {"packages": ["not an object"], "remotes": [REMOTE]},
    {"packages": [{"identifier": "no-registry-type"}]},
    {"remotes": [REMOTE]},
    {},
]
VIEWS = [
    None,
    {"packages": {"types": ["npm"]}},
    {"packages": {"types": ["npm", "mcpb"]}},
    {"packages": {"types": ["oci"]}},
    {"mirrors": {"npm": "https://art.example.com/payments-npm/"}},
]


@pytest.mark.parametrize("own", VIEWS)
def test_a_rewrite_made_when_written_serves_what_the_decision_does(own: Any) -> None:
    """Builds leave a mirror rewrite until the item is first written (no mirror checks, no
    unmirrored rule): which entries a view serves, and the bytes it serves, are the same as
    the whole decision's."""
    from gateway.served import Deferred
    from gateway.view import Decision

    settings = ViewSettings.model_validate(own) if own is not None else None
    deciding = ViewPolicy.of("v", PolicySettings(), settings, MIRRORS)
    admitting = ViewPolicy.of("v", PolicySettings(), settings, MIRRORS)
    deferred = 0
    for fields in SHAPED_ENTRIES:
        entry = parse_item(server_entry("io.github.a/b", "1.0.0", **fields), seen_at=NOW)
        decision = deciding.decide("o", entry, NOW)
        admitted = admitting.admit("o", entry, NOW)
        if not decision.served:
            assert isinstance(admitted, Decision), fields
            assert (admitted.served, admitted.reason) == (False, decision.reason), fields
            continue
        assert not isinstance(admitted, Decision), fields
        server, rules, end = admitted
        assert rules == decision.rules
        if isinstance(server, Deferred):
            deferred += 1
            reshaped = server
            server, end = reshaped.made()
            assert reshaped.made()[0] is server  # made once, then kept
        assert decision.server_json is not None
        assert json_bytes(server) == json_bytes(decision.server_json), fields
        assert end == decision.packages_json, fields
    assert deferred > 0  # mirrored entries were left to be written


def test_a_view_with_mirror_checks_decides_its_rewrites_in_the_build() -> None:
    from gateway.view import Decision

    settings = MIRRORS.model_copy(update={"verify": VerifySettings(mode="annotate")})
    view = ViewPolicy.of("v", PolicySettings(), None, settings)
    package = pkg("npm", "x", version="1.0.0")
    entry = parse_item(server_entry("io.github.a/b", "1.0.0", packages=[package]), seen_at=NOW)
    decision = view.admit("o", entry, NOW)
    assert isinstance(decision, Decision)  # whole: its pending checks feed the verifier
    assert decision.served
    assert [check.identifier for check in decision.pending] == ["x"]


def test_a_build_makes_one_rewrite_per_entry_for_the_views_that_shape_it_alike() -> None:
    """A build decides each server in every view in turn: views with the same mirrors share
    each entry's rewrite (one bytes object when written), a view with its own npm mirror
    has its own."""
    from pathlib import Path

    from gateway.catalog import Origin
    from gateway.config import FederationConfig, GatewaySettings
    from gateway.merge import Source
    from gateway.snapshot import build_snapshot

    config = FederationConfig(
        directory=Path("."),
        gateway=GatewaySettings.model_validate({"upstreams": [{"name": "one", "file": "x"}]}),
        mirrors=MIRRORS,
        views={
            "unit": ViewSettings.model_validate({"rules": []}),
            "payments": ViewSettings.model_validate(
                {"mirrors": {"npm": "https://art.example.com/payments-npm/"}}
            ),
        },
    )
    entries = [
        parse_item(
            server_entry("io.github.a/n", version, packages=[pkg("npm", "x", version=version)]),
            seen_at=NOW,
        )
        for version in ("1.0.0", "1.1.0", "2.0.0")
    ]
    snapshot = build_snapshot(config, [Source("one", entries)], {"one": Origin("one", NOW)}, NOW)
    default, unit, payments = (
        snapshot.views[name].every.items for name in ("default", "unit", "payments")
    )
    assert len(default) == len(unit) == len(payments) == 3
    for in_default, in_unit, in_payments in zip(default, unit, payments, strict=True):
        assert in_default.server_json is in_unit.server_json
        assert in_default.server_json is not in_payments.server_json
    served = [snapshot.views["default"].body(item) for item in default]
    assert all(b"/npm-remote/" in body for body in served), served
    assert b"/payments-npm/" in snapshot.views["payments"].body(payments[0])


# -- encoded paths: a rewritten mcpb location never leaves its mirror prefix ------------------

CLIMBS = ["..", "%2e%2e", "%2E%2e", ".%2e", "%2e.", "%252e%252e", "..%2f", "..%2F", "%2e%2e%5c",
          "..\\", "%2e%2E%2f%2e%2e", "..;", "%2e%2e;x", ".", "%2e"]  # fmt: skip
SEGMENTS = st.sampled_from([*CLIMBS, "a", "b", "releases", "x.mcpb", "%41"])


@pytest.mark.parametrize("climb", CLIMBS[:-2])
def test_an_encoded_climb_is_not_mirrored(climb: str) -> None:
    identifier = f"https://github.com/acme/{climb}/{climb}/secret.mcpb"
    assert Mirrors(MIRRORS).rewrite(pkg("mcpb", identifier)).mirrored is False
    for mode in ("drop-package", "drop-server"):  # `unmirrored` applies to it
        settings = MIRRORS.model_copy(update={"unmirrored": mode})
        result = rewrite_packages(Mirrors(settings), [pkg("mcpb", identifier)])
        assert result.packages == []
        assert result.dropped == ["mcpb"]


@given(st.lists(SEGMENTS, min_size=1, max_size=6), st.sampled_from(["/", "//", "/a/"]))
def test_a_mirrored_location_stays_under_its_mirror_prefix(segments: list[str], join: str) -> None:
    identifier = "https://github.com" + join + "/".join(segments)
    result = Mirrors(MIRRORS).rewrite(pkg("mcpb", identifier))
    if not result.mirrored:
        return
    served = result.package["identifier"]
    rules = sorted((MIRRORS.mcpb or {}).items(), key=lambda kv: -len(kv[0]))
    prefix = next(target for source, target in rules if identifier.startswith(source))
    resolved = URL(served)  # as an IDE's HTTP client and the gateway's own checks read it
    assert str(resolved).startswith(prefix)
    assert ".." not in [s.split(";")[0] for s in decoded(resolved.raw_path).split("/")]


def test_a_source_prefix_matches_at_a_segment_boundary_only() -> None:
    settings = MirrorSettings.model_validate(
        {"mcpb": {"https://github.com": "https://art.example.com/gh/"}}
    )
    rewritten = Mirrors(settings).rewrite(pkg("mcpb", "https://github.com/a/b.mcpb"))
    assert rewritten.package["identifier"] == "https://art.example.com/gh/a/b.mcpb"
    lookalike = Mirrors(settings).rewrite(pkg("mcpb", "https://github.com.evil.example/b.mcpb"))
    assert lookalike.mirrored is False
