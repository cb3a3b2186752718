"""OSV advisories: version orders per ecosystem (table tests from each spec), range evaluation
as the OSV schema describes it, malware and severity, and hostile records."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import FeedInvalid
from gateway.osv import Judge, read_feed
from gateway.registries import ECOSYSTEMS
from tests.conftest import examples

EVERY = frozenset({"npm", "pypi", "nuget", "cargo", "go", "maven"})

# Each row: an ecosystem and versions in ascending order, as its own tool orders them.
ORDERS = [
    # SemVer 2.0 section 11: pre-releases before the release, identifiers compared in turn
    ("npm", ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
             "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.2.0", "1.10.0", "2.0.0"]),
    ("cargo", ["0.1.0", "0.1.1-pre", "0.1.1", "0.9.0", "0.10.0"]),
    # PEP 440: dev < pre < release < post; epochs first; local versions after their base
    ("pypi", ["1.0.dev0", "1.0a1", "1.0b2", "1.0rc1", "1.0", "1.0+local.1", "1.0.post1",
              "1.1", "1.10", "1!0.5"]),
    # NuGet: four numbers; labels compared without case; a release after its pre-releases
    ("nuget", ["1.0.0-alpha", "1.0.0-Beta", "1.0.0-beta.2", "1.0.0", "1.0.0.1", "1.0.1",
               "2.0.0"]),
    # Go: `v` SemVer; a pseudo-version sorts before the release it precedes
    ("go", ["v0.0.0-20200101000000-abcdef012345", "v1.2.3-pre", "v1.2.3", "v1.10.0",
            "v2.0.0+incompatible"]),
    # Maven's ComparableVersion: alpha < beta < milestone < rc < snapshot < release < sp
    ("maven", ["1.0-alpha-1", "1.0-beta-2", "1.0-milestone-1", "1.0-rc1", "1.0-SNAPSHOT",
               "1.0", "1.0-sp1", "1.0.1", "1.1", "1.10"]),
]  # fmt: skip
SAME = [("pypi", "2.0.0-rc.1", "2.0.0rc1"), ("pypi", "1.1", "1.1.0"), ("maven", "1.0", "1.0.0"),
        ("maven", "1.0-ga", "1.0"), ("go", "1.2.3", "v1.2.3"), ("nuget", "1.0.0-BETA", "1.0.0-beta")]  # fmt: skip


@pytest.mark.parametrize(("kind", "versions"), ORDERS)
def test_versions_compare_as_each_tool_orders_them(kind: str, versions: list[str]) -> None:
    ecosystem = ECOSYSTEMS[kind]
    orders = [ecosystem.order(version) for version in versions]
    assert None not in orders, list(zip(versions, orders, strict=True))
    for lower, higher, a, b in zip(orders, orders[1:], versions, versions[1:], strict=False):
        assert lower < higher, f"{kind}: {a} < {b}"


@pytest.mark.parametrize(("kind", "one", "other"), SAME)
def test_spellings_of_one_version_compare_equal(kind: str, one: str, other: str) -> None:
    ecosystem = ECOSYSTEMS[kind]
    assert ecosystem.order(one) == ecosystem.order(other)


@pytest.mark.parametrize("kind", ["oci", "mcpb"])
def test_ecosystems_without_an_order_order_nothing(kind: str) -> None:
    assert ECOSYSTEMS[kind].order("1.0.0") is None
    assert ECOSYSTEMS[kind].osv is None


def record(ident: str = "GHSA-0001", *, ecosystem: str = "npm", name: str = "left-pad",
           ranges: list[dict[str, Any]] | None = None, versions: list[str] | None = None,
           **extra: Any) -> dict[str, Any]:  # fmt: skip
    affected: dict[str, Any] = {"package": {"ecosystem": ecosystem, "name": name}}
    if ranges is not None:
        affected["ranges"] = ranges
    if versions is not None:
        affected["versions"] = versions
    return {"id": ident, "modified": "2026-01-01T00:00:00Z", "affected": [affected], **extra}


def between(*events: tuple[str, str], kind: str = "ECOSYSTEM") -> dict[str, Any]:
    return {"type": kind, "events": [{key: value} for key, value in events]}


def judge(*records: dict[str, Any]) -> Judge:
    return Judge(read_feed([orjson.dumps(list(records))], EVERY))


def state(j: Judge, kind: str, name: str, version: str) -> str:
    finding = j.finding(kind, name, version)
    assert finding is not None
    return finding.state


RANGES = [
    # (events, version, affected?)
    ([("introduced", "0")], "9.9.9", True),
    ([("introduced", "1.0.0"), ("fixed", "1.2.0")], "0.9.0", False),
    ([("introduced", "1.0.0"), ("fixed", "1.2.0")], "1.0.0", True),
    ([("introduced", "1.0.0"), ("fixed", "1.2.0")], "1.1.9", True),
    ([("introduced", "1.0.0"), ("fixed", "1.2.0")], "1.2.0", False),
    ([("introduced", "1.0.0"), ("fixed", "1.2.0")], "1.2.0-rc.1", True),
    ([("introduced", "0"), ("last_affected", "1.4.0")], "1.4.0", True),
    ([("introduced", "0"), ("last_affected", "1.4.0")], "1.4.1", False),
    ([("introduced", "1.0.0"), ("limit", "2.0.0")], "2.0.0", False),
    # events in any order in the record, two intervals in one range
    ([("fixed", "1.5.0"), ("introduced", "2.0.0"), ("introduced", "1.0.0"), ("fixed", "2.1.0")],
     "1.7.0", False),
    ([("fixed", "1.5.0"), ("introduced", "2.0.0"), ("introduced", "1.0.0"), ("fixed", "2.1.0")],
     "2.0.5", True),
]  # fmt: skip


@pytest.mark.parametrize(("events", "version", "affected"), RANGES)
def test_ranges_are_evaluated_as_the_osv_schema_says(
    events: list[tuple[str, str]], version: str, affected: bool
) -> None:
    j = judge(record(ranges=[between(*events)]))
    assert state(j, "npm", "left-pad", version) == ("present" if affected else "absent")
    semver = judge(record(ranges=[between(*events, kind="SEMVER")]))
    assert state(semver, "npm", "left-pad", version) == ("present" if affected else "absent")


def test_each_ecosystem_reads_its_own_range() -> None:
    j = judge(
        record("PYSEC-1", ecosystem="PyPI", name="Requests_Toolbelt",
               ranges=[between(("introduced", "0"), ("fixed", "1.0rc1"))]),
        record("GO-1", ecosystem="Go", name="github.com/acme/tool",
               ranges=[between(("introduced", "0"), ("fixed", "1.2.3"), kind="SEMVER")]),
        record("GHSA-M", ecosystem="Maven", name="org.acme:lib",
               ranges=[between(("introduced", "1.0-alpha-1"), ("fixed", "1.0"))]),
        record("GHSA-N", ecosystem="NuGet", name="Acme.Lib",
               ranges=[between(("introduced", "1.0.0"), ("fixed", "1.0.0.2"))]),
        record("RUSTSEC-1", ecosystem="crates.io", name="acme",
               ranges=[between(("introduced", "0.1.0"), ("fixed", "0.10.0"))]),
    )  # fmt: skip
    assert state(j, "pypi", "requests-toolbelt", "1.0b2") == "present"  # PEP 503 names
    assert state(j, "pypi", "requests.toolbelt", "1.0") == "absent"
    assert state(j, "go", "github.com/acme/tool", "v1.2.2") == "present"  # `v` or not
    assert state(j, "go", "github.com/acme/tool", "1.2.3") == "absent"
    assert state(j, "maven", "org.acme:lib", "1.0-SNAPSHOT") == "present"
    assert state(j, "maven", "org.acme:lib", "1.0-sp1") == "absent"
    assert state(j, "nuget", "acme.lib", "1.0.0.1") == "present"  # ids in any case
    assert state(j, "cargo", "Acme", "0.9.0") == "present"
    assert state(j, "cargo", "acme", "0.10.0") == "absent"


def test_listed_versions_count_and_ranges_that_cannot_be_evaluated_are_unknown() -> None:
    j = judge(
        record("GHSA-L", versions=["1.0.1"]),
        record("GHSA-G", name="gitonly", ranges=[{"type": "GIT", "repo": "x",
                                                  "events": [{"introduced": "abc"}]}]),
    )  # fmt: skip
    assert state(j, "npm", "left-pad", "1.0.1") == "present"
    assert state(j, "npm", "left-pad", "1.0.2") == "absent"
    assert state(j, "npm", "gitonly", "1.0.0") == "unknown"
    assert state(j, "npm", "other", "1.0.0") == "absent"


def test_a_version_no_order_reads_is_unknown_unless_every_version_is_affected() -> None:
    j = judge(record(ranges=[between(("introduced", "1.0.0"))]),
              record("MAL-2026-1", name="evil", ranges=[between(("introduced", "0"))]))  # fmt: skip
    assert state(j, "npm", "left-pad", "not-a-version") == "unknown"
    assert state(j, "npm", "evil", "not-a-version") == "present"


def test_malware_severity_and_coverage() -> None:
    j = judge(
        record("MAL-2026-1234", name="evil", ranges=[between(("introduced", "0"))]),
        record("GHSA-ALIAS", name="sly", aliases=["MAL-2026-9"],
               ranges=[between(("introduced", "0"))]),
        record("GHSA-CRIT", name="crit", ranges=[between(("introduced", "0"))],
               severity=[{"type": "CVSS_V3",
                          "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]),
        record("GHSA-V4", name="four", ranges=[between(("introduced", "0"))],
               severity=[{"type": "CVSS_V4",
                          "score": "CVSS:4.0/AV:N/AC:H/AT:P/PR:H/UI:A/VC:L/VI:N/VA:N/SC:N/SI:N/SA:N"}]),
        record("GHSA-NONE", name="plain", ranges=[between(("introduced", "0"))],
               severity=[{"type": "CVSS_V3", "score": "garbage"}]),
        record("GHSA-W", name="withdrawn", ranges=[between(("introduced", "0"))],
               withdrawn="2026-02-01T00:00:00Z"),
    )  # fmt: skip
    evil = j.finding("npm", "evil", "1.0.0")
    assert evil is not None
    assert [a.id for a in evil.advisories] == ["MAL-2026-1234"]
    assert evil.advisories[0].malicious
    sly = j.finding("npm", "sly", "1.0.0")
    assert sly is not None
    assert sly.advisories[0].malicious
    crit = j.finding("npm", "crit", "1.0.0")
    assert crit is not None
    assert crit.advisories[0].severity == "critical"
    assert not crit.advisories[0].malicious
    four = j.finding("npm", "four", "1.0.0")
    assert four is not None
    assert four.advisories[0].severity == "low"
    plain = j.finding("npm", "plain", "1.0.0")
    assert plain is not None
    assert plain.advisories[0].severity is None
    assert state(j, "npm", "withdrawn", "1.0.0") == "absent"
    assert j.finding("oci", "docker.io/acme/tool", "1.0.0") is None  # not an OSV ecosystem
    assert state(Judge(None), "npm", "evil", "1.0.0") == "unknown"  # no feed yet
    uncovered = Judge(read_feed([orjson.dumps(record())], frozenset({"pypi"})))
    assert state(uncovered, "npm", "left-pad", "1.0.0") == "unknown"  # npm not in this feed


# -- hostile records --------------------------------------------------------------------------

BAD = [
    {"id": 3, "affected": []},
    {"id": "x" * 500, "affected": []},
    {"id": "GHSA-\u0000", "affected": []},
    {"id": "A", "affected": "everything"},
    {"id": "A", "affected": [{"package": "npm"}]},
    {"id": "A", "affected": [{"package": {"ecosystem": "npm", "name": ""}}]},
    {"id": "A", "affected": [{"package": {"ecosystem": "npm", "name": "x"},
                              "ranges": [{"type": "ECOSYSTEM", "events": [{}]}]}]},
    {"id": "A", "affected": [{"package": {"ecosystem": "npm", "name": "x"},
                              "ranges": [{"type": "ECOSYSTEM",
                                          "events": [{"introduced": "0", "fixed": "1"}]}]}]},
    {"id": "A", "affected": [{"package": {"ecosystem": "npm", "name": "x"},
                              "versions": [1, 2]}]},
    {"id": "A", "aliases": "MAL-1"},
]  # fmt: skip


@pytest.mark.parametrize("bad", BAD)
def test_a_malformed_record_is_skipped_with_its_reason(bad: dict[str, Any]) -> None:
    feed = read_feed([orjson.dumps(bad), orjson.dumps(record())], EVERY)
    assert feed.records == 2
    assert sum(feed.skipped.values()) == 1
    assert ("npm", "left-pad") in feed.packages


def test_a_feed_of_mostly_malformed_records_is_refused() -> None:
    documents = [orjson.dumps(BAD[0])] * 11 + [orjson.dumps(record())] * 10
    with pytest.raises(FeedInvalid, match="11 of its 21 records are malformed") as refused:
        read_feed(documents, EVERY)
    assert refused.value.skipped
    read_feed([orjson.dumps(BAD[0])] * 9 + [orjson.dumps(record())], EVERY)  # few: kept


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "aliases", "affected", "package", "ecosystem", "name", "ranges",
                         "type", "events", "introduced", "fixed", "versions", "severity",
                         "score", "withdrawn", "x"]), inner, max_size=5),
    max_leaves=30,
)  # fmt: skip


@settings(max_examples=examples(300), deadline=None)
@given(JSON)
def test_any_json_is_read_or_skipped_never_an_error(document: object) -> None:
    feed = read_feed([orjson.dumps(document)], EVERY)  # a record read, or skipped and counted
    assert feed.records == (len(document) if isinstance(document, list) else 1)
    assert sum(feed.skipped.values()) <= feed.records
    j = Judge(feed)
    for kind, name in feed.packages:
        j.finding(kind, name, "1.0.0")


# -- what a hostile feed or upstream tried, found in review ------------------------------------

LIMITS = [
    ([("introduced", "0"), ("limit", "1.0.0"), ("limit", "5.0.0")], "3.0.0", True),
    ([("introduced", "0"), ("limit", "1.0.0"), ("limit", "5.0.0")], "5.0.0", False),
    ([("introduced", "0"), ("limit", "*")], "9.0.0", True),
    ([("introduced", "1.0.0"), ("limit", "*")], "0.5.0", False),
]  # fmt: skip


@pytest.mark.parametrize(("events", "version", "affected"), LIMITS)
def test_limits_bound_a_range_as_the_schema_says(
    events: list[tuple[str, str]], version: str, affected: bool
) -> None:
    j = judge(record(ranges=[between(*events)]))
    assert state(j, "npm", "left-pad", version) == ("present" if affected else "absent")


@pytest.mark.parametrize(
    ("kind", "ecosystem", "version"),
    [("npm", "npm", "1.x"), ("npm", "npm", "1"), ("npm", "npm", "^1.0.0"),
     ("cargo", "crates.io", "1"), ("go", "Go", "v1"), ("maven", "Maven", "LATEST"),
     ("maven", "Maven", "RELEASE"), ("nuget", "NuGet", "v"), ("nuget", "NuGet", "1.x")],
)  # fmt: skip
def test_a_version_its_tool_reads_as_a_range_is_never_absent(
    kind: str, ecosystem: str, version: str
) -> None:
    """`npx evil@1.x` installs the newest 1.x: a range that starts after 1.0.0 may cover it."""
    name = "org.acme:evil" if kind == "maven" else "evil"
    j = judge(record("GHSA-R", ecosystem=ecosystem, name=name,
                     ranges=[between(("introduced", "1.0.5"), ("fixed", "1.9.0"))]))  # fmt: skip
    assert state(j, kind, name, version) == "unknown"
    every = judge(record("MAL-2026-7", ecosystem=ecosystem, name=name,
                         ranges=[between(("introduced", "0"))]))  # fmt: skip
    assert state(every, kind, name, version) == "present"


@pytest.mark.parametrize(
    ("kind", "ecosystem", "listed", "version"),
    [("pypi", "PyPI", "1.0.0", "1.0"), ("pypi", "PyPI", "1.0.0", "1.0.0.0"),
     ("go", "Go", "1.0.0", "v1.0.0"), ("nuget", "NuGet", "1.0.0", "1.0"),
     ("maven", "Maven", "1.0", "1.0.0"), ("npm", "npm", "1.0.0", "1.0.0+build.1")],
)  # fmt: skip
def test_a_listed_version_matches_in_any_spelling_of_it(
    kind: str, ecosystem: str, listed: str, version: str
) -> None:
    name = "org.acme:evil" if kind == "maven" else "evil"
    j = judge(record("MAL-2026-8", ecosystem=ecosystem, name=name, versions=[listed]))
    assert state(j, kind, name, version) == "present"


def test_a_package_naming_no_version_is_judged_for_whatever_its_tool_installs() -> None:
    ranged = judge(record(ranges=[between(("introduced", "1.1.0"))]))
    every = judge(record("MAL-2026-9", ranges=[between(("introduced", "0"))]))
    assert state(ranged, "npm", "left-pad", None) == "unknown"  # type: ignore[arg-type]
    assert state(every, "npm", "left-pad", None) == "present"  # type: ignore[arg-type]
    assert state(every, "npm", "other", None) == "absent"  # type: ignore[arg-type]


VERSIONISH = st.text(alphabet="0123456789.-+vVxX*^~<>=abcrLATESTRELASNAPHOT", max_size=12)


@settings(max_examples=examples(400), deadline=None)
@given(st.sampled_from(sorted(EVERY)), VERSIONISH, st.lists(VERSIONISH, min_size=1, max_size=3),
       st.sampled_from(["SEMVER", "ECOSYSTEM"]))  # fmt: skip
def test_any_version_against_any_range_is_an_answer_never_an_error(
    kind: str, version: str, events: list[str], range_kind: str
) -> None:
    ecosystem = ECOSYSTEMS[kind].osv
    assert ecosystem is not None
    name = "org.acme:x" if kind == "maven" else "x"
    keys = ["introduced", "fixed", "last_affected", "limit"]
    j = judge(record(ecosystem=ecosystem, name=name, versions=events[:1], ranges=[
        between(*[(keys[i % 4], e) for i, e in enumerate(events)], kind=range_kind)]))  # fmt: skip
    assert state(j, kind, name, version) in ("present", "absent", "unknown")
