"""`diff` of a proposed config: where packages would install from, which package types a view
stops or starts serving, which packages their mirror is asked about, and (`--verify`) whether
the proposed mirrors have the changed locations: a real fake mirror on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.cli import main
from gateway.config import MirrorSettings
from gateway.diff import Diff, diff_configs, render_text
from gateway.loader import load_config
from gateway.offline import snapshot_from_state
from gateway.registries.base import Check, Result, Verdict
from gateway.relocations import location_base
from gateway.shaping import Lookup
from tests.conftest import file_upstream, free_port, write_config
from tests.fakes import FakeMirror, server_entry

NPM_REMOTE = "https://npm.example.test/api/npm/npm-remote/"
GHCR = "registry.example.test/ghcr"
PYPI_REMOTE = "https://pypi.example.test/simple/"
MIRRORS = f"""
npm: "{NPM_REMOTE}"
pypi: "{PYPI_REMOTE}"
oci:
  "ghcr.io": "{GHCR}"
"""
PUBLIC_NPM = "2 npm packages would install from the public npm registry instead of npm.example.test/api/npm/npm-remote"


def npm(identifier: str, version: str) -> dict[str, Any]:
    return {"registryType": "npm", "identifier": identifier, "version": version,
            "transport": {"type": "stdio"}}  # fmt: skip


def entries() -> list[dict[str, Any]]:
    """Three servers: npm packages the fake mirror has and has not, an OCI image, PyPI."""
    weather_oci = {"registryType": "oci", "identifier": "ghcr.io/acme/weather:1.2.0",
                   "transport": {"type": "stdio"}}  # fmt: skip
    tools = {"registryType": "pypi", "identifier": "acme-tools", "version": "1.0.0",
             "transport": {"type": "stdio"}}  # fmt: skip
    return [
        server_entry(
            "io.github.acme/weather", "1.2.0", packages=[npm("@acme/weather", "1.2.0"), weather_oci]
        ),
        server_entry("io.github.acme/absent", "1.0.0", packages=[npm("@acme/absent", "1.0.0")]),
        server_entry("io.github.acme/tools", "1.0.0", packages=[tools]),
    ]


def write_dir(
    directory: Path,
    data: Path,
    *,
    mirrors: str | None = MIRRORS,
    policy: str | None = None,
    views: dict[str, str] | None = None,
) -> str:
    """A config directory over the same upstream file (state in the first one's state_dir)."""
    write_config(directory, {"upstreams": [file_upstream(data, "acme", entries())]})
    if mirrors is not None:
        (directory / "mirrors.yaml").write_text(mirrors, encoding="utf-8")
    if policy is not None:
        (directory / "policy.yaml").write_text(policy, encoding="utf-8")
    for name, text in (views or {}).items():
        (directory / "views").mkdir(exist_ok=True)
        (directory / "views" / f"{name}.yaml").write_text(text, encoding="utf-8")
    return str(directory)


@pytest.fixture
def current(tmp_path: Path) -> str:
    """The current config, its upstream synced into its state_dir."""
    directory = write_dir(tmp_path / "current", tmp_path / "data")
    assert main(["sync", "--config", directory]) == 0
    return directory


def diff_json(capsys: Any, current: str, proposed: str, *extra: str) -> Any:
    capsys.readouterr()
    assert main(["diff", "--config", current, "--against", proposed, "--json", *extra]) == 0
    return orjson.loads(capsys.readouterr().out)


def diff_text(capsys: Any, current: str, proposed: str) -> str:
    capsys.readouterr()
    assert main(["diff", "--config", current, "--against", proposed]) == 0
    text: str = capsys.readouterr().out
    return text


def groups(report: Any, view: str = "default") -> dict[tuple[str, str], Any]:
    return {(g["change"], g["registryType"]): g for g in report["views"][view]["packages"]}


def test_deleting_mirrors_yaml_sends_every_package_to_the_public_registries(
    current: str, tmp_path: Path, capsys: Any
) -> None:
    proposed = tmp_path / "proposed"
    shutil.copytree(current, proposed, ignore=shutil.ignore_patterns("state"))
    (proposed / "mirrors.yaml").unlink()
    report = diff_json(capsys, current, str(proposed))
    view = report["views"]["default"]
    assert view["status"] == "changed"
    assert view["appear"] == view["disappear"] == []  # no server changes: only locations
    found = groups(report)
    assert set(found) == {("location", "npm"), ("location", "oci"), ("location", "pypi")}
    npm_group = found[("location", "npm")]
    assert npm_group["from"] == "npm.example.test/api/npm/npm-remote"
    assert npm_group["to"] == "the public npm registry"
    assert npm_group["count"] == 2
    assert npm_group["summary"] == PUBLIC_NPM
    assert npm_group["packages"][0] == {
        "name": "io.github.acme/absent",
        "version": "1.0.0",
        "from": {"identifier": "@acme/absent", "registryBaseUrl": NPM_REMOTE},
        "to": {"identifier": "@acme/absent"},
        "verification": {"from": "off", "to": "off"},
    }
    oci = found[("location", "oci")]
    assert (oci["from"], oci["to"], oci["count"]) == (GHCR, "ghcr.io", 1)
    assert oci["packages"][0]["from"] == {"identifier": f"{GHCR}/acme/weather:1.2.0"}
    assert oci["packages"][0]["to"] == {"identifier": "ghcr.io/acme/weather:1.2.0"}
    assert found[("location", "pypi")]["to"] == "pypi.org"
    assert report["packageTotals"] == {"location": 4, "removed": 0, "added": 0, "verification": 0}
    assert report["totals"] == {"appear": 0, "disappear": 0, "latestChanged": 0}

    text = diff_text(capsys, current, str(proposed))
    assert f"  * {PUBLIC_NPM}\n" in text
    assert (
        "  * 1 oci package would install from ghcr.io instead of registry.example.test/ghcr\n"
        in (text)
    )
    assert "      io.github.acme/absent@1.0.0  @acme/absent\n" in text
    assert "packages: 4 change location, 0 no longer served, 0 newly served" in text


def test_a_views_mirror_override_changes_that_view_only(tmp_path: Path, capsys: Any) -> None:
    view = "default: allow\nmirrors:\n  npm: 'https://npm.example.test/{repo}/'\n"
    current = write_dir(
        tmp_path / "current", tmp_path / "data", views={"payments": view.format(repo="pay-npm")}
    )
    assert main(["sync", "--config", current]) == 0
    proposed = write_dir(
        tmp_path / "proposed", tmp_path / "data", views={"payments": view.format(repo="pay-npm-2")}
    )
    report = diff_json(capsys, current, proposed)
    assert report["views"]["default"]["status"] == "unchanged"
    assert report["views"]["default"]["packages"] == []
    payments = report["views"]["payments"]
    assert payments["status"] == "changed"
    [group] = payments["packages"]
    assert group["summary"] == (
        "2 npm packages would install from npm.example.test/pay-npm-2 instead of "
        "npm.example.test/pay-npm"
    )
    assert [p["to"]["registryBaseUrl"] for p in group["packages"]] == [
        "https://npm.example.test/pay-npm-2/"
    ] * 2


def test_a_package_type_dropped_from_the_policy(tmp_path: Path, capsys: Any) -> None:
    types = "packages:\n  types: [{}]\n"
    current = write_dir(
        tmp_path / "current", tmp_path / "data", policy=types.format("npm, pypi, oci")
    )
    assert main(["sync", "--config", current]) == 0
    proposed = write_dir(tmp_path / "proposed", tmp_path / "data", policy=types.format("npm, pypi"))
    report = diff_json(capsys, current, proposed)
    view = report["views"]["default"]
    assert view["packageTypes"] == {"from": ["npm", "oci", "pypi"], "to": ["npm", "pypi"]}
    [group] = view["packages"]
    assert group["change"] == "removed"
    assert group["reason"] == "packages.types"
    assert (group["from"], group["to"]) == (GHCR, None)
    assert group["packages"] == [
        {"name": "io.github.acme/weather", "version": "1.2.0",
         "from": {"identifier": f"{GHCR}/acme/weather:1.2.0"}, "to": None},
    ]  # fmt: skip
    assert report["packageTotals"]["removed"] == 1
    # And back: the type starts being served again.
    back = diff_json(capsys, proposed, current, "--state-dir", str(Path(current) / "state"))
    [group] = back["views"]["default"]["packages"]
    assert group["change"] == "added"
    assert group["summary"] == (
        "1 oci package would start being served, from registry.example.test/ghcr "
        "(oci joins the view's packages.types)"
    )
    text = diff_text(capsys, current, proposed)
    assert "  package types: npm, oci, pypi -> npm, pypi\n" in text
    assert (
        "  * 1 oci package from registry.example.test/ghcr would no longer be served "
        "(oci is not among the view's packages.types)\n"
    ) in text


@pytest.mark.parametrize(
    ("old", "new", "wording"),
    [
        (
            "annotate",
            "off",
            "would no longer be checked against their mirror (verify.mode annotate -> off)",
        ),
        ("off", "enforce", "would be checked against their mirror (verify.mode off -> enforce)"),
        ("annotate", "enforce", "would be checked with verify.mode enforce instead of annotate"),
    ],
)
def test_a_verification_mode_change(
    tmp_path: Path, capsys: Any, old: str, new: str, wording: str
) -> None:
    mode = "verify:\n  mode: '{}'\n"
    current = write_dir(tmp_path / "current", tmp_path / "data", mirrors=MIRRORS + mode.format(old))
    assert main(["sync", "--config", current]) == 0
    proposed = write_dir(
        tmp_path / "proposed", tmp_path / "data", mirrors=MIRRORS + mode.format(new)
    )
    report = diff_json(capsys, current, proposed)
    view = report["views"]["default"]
    assert view["verifyMode"] == {"from": old, "to": new}
    found = groups(report)
    assert set(found) == {("verification", t) for t in ("npm", "oci", "pypi")}
    npm_group = found[("verification", "npm")]
    assert npm_group["verifyMode"] == {"from": old, "to": new}
    assert (
        npm_group["summary"] == f"2 npm packages from npm.example.test/api/npm/npm-remote {wording}"
    )
    assert {p["name"] for p in npm_group["packages"]} == {
        "io.github.acme/weather", "io.github.acme/absent"
    }  # fmt: skip
    assert report["packageTotals"]["verification"] == 4
    assert f"  verify.mode: {old} -> {new}\n" in diff_text(capsys, current, proposed)


def test_nothing_changed_is_reported_unchanged(current: str, capsys: Any) -> None:
    report = diff_json(capsys, current, current)
    assert report["views"]["default"]["status"] == "unchanged"
    assert report["views"]["default"]["packages"] == []
    assert report["packageTotals"] == {"location": 0, "removed": 0, "added": 0, "verification": 0}
    assert "mirror" not in report  # nothing asked without --verify
    text = diff_text(capsys, current, current)
    assert "view default: unchanged, 3 -> 3 versions\ntotal:" in text
    assert "  * " not in text


MIRROR_SETTINGS = MirrorSettings.model_validate(
    {"oci": {"docker.io": "registry.example.test/hub"},
     "mcpb": {"https://github.com/": "https://files.example.test/gh-releases/"}}
)  # fmt: skip


@pytest.mark.parametrize(
    ("registry_type", "location", "named"),
    [
        ("npm", {"identifier": "x"}, "the public npm registry"),
        ("npm", {"identifier": "x", "registryBaseUrl": "https://registry.npmjs.org"},
         "the public npm registry"),
        ("pypi", {"identifier": "x", "registryBaseUrl": "https://pypi.org/simple/"}, "pypi.org"),
        ("nuget", {"identifier": "x", "registryBaseUrl": "https://api.nuget.org/v3/index.json"},
         "nuget.org"),
        ("cargo", {"identifier": "x"}, "crates.io"),
        ("cargo", {"identifier": "x", "registryBaseUrl": "sparse+https://c.example.test/index/"},
         "c.example.test/index"),
        ("npm", {"identifier": "x", "registryBaseUrl": "https://u:p@npm.example.test/r/"},
         "npm.example.test/r"),  # never a credential
        ("oci", {"identifier": "nginx:1"}, "Docker Hub"),
        ("oci", {"identifier": "registry.example.test/hub/library/nginx:1"},
         "registry.example.test/hub"),
        ("oci", {"identifier": "acme/x", "registryBaseUrl": "https://ghcr.io"}, "ghcr.io"),
        ("mcpb", {"identifier": "https://github.com/a/b/releases/download/v1/x.mcpb"},
         "github.com"),
        ("mcpb", {"identifier": "https://files.example.test/gh-releases/a/b/x.mcpb"},
         "files.example.test/gh-releases"),
        ("conda", {"identifier": "x"}, "the public conda registry"),
    ],
)  # fmt: skip
def test_a_location_is_named_as_a_reader_knows_it(
    registry_type: str, location: dict[str, str], named: str
) -> None:
    assert location_base(registry_type, location, MIRROR_SETTINGS) == named


def test_a_change_the_short_names_hide_is_spelled_in_full(tmp_path: Path, capsys: Any) -> None:
    mirrors = "npm: '{}://npm.example.test/r/'\n"
    current = write_dir(tmp_path / "current", tmp_path / "data", mirrors=mirrors.format("http"))
    assert main(["sync", "--config", current]) == 0
    proposed = write_dir(tmp_path / "proposed", tmp_path / "data", mirrors=mirrors.format("https"))
    [group] = diff_json(capsys, current, proposed)["views"]["default"]["packages"]
    assert group["summary"] == (
        "2 npm packages would install from https://npm.example.test/r/ instead of "
        "http://npm.example.test/r/"
    )


# -- the report as a value, and as scripts read it ----------------------------------------------


def diff_in_process(current: str, proposed: str) -> Diff:
    """What `diff` computes before it prints, on the current config's state, as the CLI does."""
    old, new = load_config(current), load_config(proposed)
    now = datetime.now(UTC)
    before, _ = snapshot_from_state(old, old.gateway.state_dir, now)
    after, _ = snapshot_from_state(new, old.gateway.state_dir, now)
    return diff_configs(old, before, new, after)


def typed_and_mirrored(tmp_path: Path) -> tuple[str, str]:
    """A pair whose diff has every optional key: package types and verify.mode change, a type
    is dropped (a record with no verification), and new mirror locations can be asked about."""
    current = write_dir(tmp_path / "current", tmp_path / "data", mirrors=None)
    assert main(["sync", "--config", current]) == 0
    proposed = write_dir(
        tmp_path / "proposed", tmp_path / "data",
        mirrors=MIRRORS + "verify:\n  mode: annotate\n", policy="packages:\n  types: [npm, pypi]\n",
    )  # fmt: skip
    return current, proposed


def test_the_report_is_what_diff_json_prints(tmp_path: Path, capsys: Any) -> None:
    """Scripts read `diff --json`: it is the typed report's JSON, keys in the documented order."""
    current, proposed = typed_and_mirrored(tmp_path)
    diff = diff_in_process(current, proposed)
    capsys.readouterr()
    assert main(["diff", "--config", current, "--against", proposed, "--json"]) == 0
    printed = capsys.readouterr().out
    assert (
        printed == orjson.dumps(diff.report.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n"
    )
    assert main(["diff", "--config", current, "--against", proposed]) == 0
    assert capsys.readouterr().out == render_text(diff.report) + "\n"

    report = orjson.loads(printed)
    assert list(report) == ["views", "totals", "packageTotals"]  # "mirror" only with --verify
    view = report["views"]["default"]
    assert list(view) == [
        "status", "appear", "disappear", "latestChanged", "totals", "packages", "packageTypes",
        "verifyMode",
    ]  # fmt: skip
    found = groups(report)
    assert list(found[("removed", "oci")]) == [
        "change", "registryType", "from", "to", "reason", "count", "summary", "packages"
    ]  # fmt: skip
    assert list(found[("removed", "oci")]["packages"][0]) == ["name", "version", "from", "to"]
    location = found[("location", "npm")]
    assert list(location) == [
        "change", "registryType", "from", "to", "count", "summary", "packages"
    ]  # fmt: skip
    assert list(location["packages"][0]) == ["name", "version", "from", "to", "verification"]


def answering(result: Result | None) -> Lookup:
    """A mirror that answers every check alike (None: one that never answers)."""

    def lookup(_: Check) -> Verdict | None:
        return Verdict(result, datetime.now(UTC), True) if result is not None else None

    return lookup


def test_the_report_is_immutable_and_answers_make_a_new_one(tmp_path: Path) -> None:
    current, proposed = typed_and_mirrored(tmp_path)
    diff = diff_in_process(current, proposed)
    report = diff.report
    [view] = report.views
    group = view.packages[0]
    for value, name in [(report, "mirror"), (view, "status"), (group, "packages"),
                        (group.packages[0], "mirror")]:  # fmt: skip
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, name, None)
    assert isinstance(view.packages, tuple)
    assert isinstance(group.packages, tuple)

    before = orjson.dumps(report.to_json())
    diff.answer(answering("missing"))
    assert orjson.dumps(report.to_json()) == before  # the first report is as it was
    answered = diff.report.to_json()
    assert answered["mirror"] == {"available": 0, "missing": 3, "unknown": 0}
    npm_group = groups(answered)[("location", "npm")]
    assert list(npm_group)[-2:] == ["packages", "mirror"]
    assert npm_group["packages"][0]["mirror"] == "missing"
    diff.answer(answering(None))  # asked again: the new answers replace the old
    assert diff.report.to_json()["mirror"] == {"available": 0, "missing": 0, "unknown": 3}


# -- --verify: ask the proposed mirrors ---------------------------------------------------------


async def run_diff(capsys: Any, *argv: str) -> Any:
    """The command in a thread of its own (it runs its own event loop), while this test's loop
    serves the fake mirror."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["diff", *argv, "--json", "--verify"])
    assert code == 0
    return orjson.loads(capsys.readouterr().out)


async def test_verify_asks_the_proposed_mirrors_about_each_changed_location(
    tmp_path: Path, capsys: Any, mirror: FakeMirror
) -> None:
    current = write_dir(tmp_path / "current", tmp_path / "data", mirrors=None)
    assert await asyncio.to_thread(main, ["sync", "--config", current]) == 0
    unreachable = f"http://127.0.0.1:{free_port()}/simple/"  # nothing listens there
    proposed = write_dir(
        tmp_path / "proposed", tmp_path / "data",
        mirrors=f"npm: '{mirror.url}/npm/'\npypi: '{unreachable}'\n",
    )  # fmt: skip
    report = await run_diff(capsys, "--config", current, "--against", proposed)
    found = groups(report)
    answers = {
        (p["name"], p["mirror"])
        for group in found.values()
        for p in group["packages"]
        if "mirror" in p
    }
    assert answers == {
        ("io.github.acme/weather", "available"),  # the fake mirror has @acme/weather 1.2.0
        ("io.github.acme/absent", "missing"),  # and no @acme/absent at all
        ("io.github.acme/tools", "unknown"),  # its mirror cannot be reached
    }
    assert found[("location", "npm")]["mirror"] == {"available": 1, "missing": 1, "unknown": 0}
    assert found[("location", "pypi")]["mirror"] == {"available": 0, "missing": 0, "unknown": 1}
    assert report["mirror"] == {"available": 1, "missing": 1, "unknown": 1}
    assert ("location", "oci") not in found  # no proposed OCI mirror: nothing changes there
    # Only the proposed mirror's own locations are asked about: one packument per package.
    assert sorted(path for path in mirror.hits) == ["/npm/@acme/absent", "/npm/@acme/weather"]

    capsys.readouterr()
    code = await asyncio.to_thread(
        main, ["diff", "--config", current, "--against", proposed, "--verify"]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "      mirror: 1 available, 1 missing\n" in text
    assert "      mirror: 0 available, 0 missing, 1 unknown (unreachable)\n" in text
    assert "      io.github.acme/absent@1.0.0  @acme/absent  [missing]\n" in text
    assert text.endswith(
        "mirror checks of changed locations: 1 available, 1 missing, 1 unknown (unreachable)\n"
    )


async def test_verify_gives_up_at_its_deadline(
    tmp_path: Path, capsys: Any, mirror: FakeMirror
) -> None:
    current = write_dir(tmp_path / "current", tmp_path / "data", mirrors=None)
    assert await asyncio.to_thread(main, ["sync", "--config", current]) == 0
    proposed = write_dir(
        tmp_path / "proposed", tmp_path / "data", mirrors=f"npm: '{mirror.url}/npm/'\n"
    )
    mirror.npm_delay = 0.5  # far longer than the checks may take
    report = await run_diff(
        capsys, "--config", current, "--against", proposed, "--verify-timeout", "50ms"
    )
    assert report["mirror"] == {"available": 0, "missing": 0, "unknown": 2}
    assert mirror.hits["/npm/@acme/weather"] == 1  # asked, and not waited for
