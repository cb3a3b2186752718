"""The operators' tools from the command line, on the config directories in federation_config/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml

from gateway.cli import main
from tests.conftest import REPO, file_upstream, write_config

DEMO = str(REPO / "federation_config" / "demo")
MIRRORED_GITHUB = "registry.demo.example/ghcr/github/github-mcp-server:0.21.0"
PROPOSED = str(REPO / "federation_config" / "demo-proposed")


@pytest.fixture
def state(tmp_path: Path) -> str:
    """The demo's upstream synced once into a fresh state_dir, as `sync` does it."""
    directory = tmp_path / "state"
    assert main(["sync", "--config", DEMO, "--state-dir", str(directory)]) == 0
    assert (directory / "demo.json").is_file()
    return str(directory)


def run_json(capsys: Any, *argv: str) -> Any:
    assert main(list(argv)) == 0
    return orjson.loads(capsys.readouterr().out)


def test_explain_shows_every_version_in_every_view(state: str, capsys: Any) -> None:
    report = run_json(
        capsys, "explain", "io.github.github/github-mcp-server", "--config", DEMO,
        "--state-dir", state, "--json",
    )  # fmt: skip
    versions = {item["version"]: item for item in report["versions"]}
    assert set(versions) == {"0.21.0", "0.19.1"}
    new, old = versions["0.21.0"]["views"], versions["0.19.1"]["views"]
    assert new["default"] == {
        "served": True, "reason": "served", "rules": ["policy.yaml rules[2]"], "isLatest": True,
        "packages": [
            {
                "registryType": "oci",
                "original": {"identifier": "ghcr.io/github/github-mcp-server:0.21.0"},
                "location": {"identifier": MIRRORED_GITHUB},
            }
        ],
    }  # fmt: skip
    assert new["payments"]["removedPackages"] == ["oci"]
    assert old["payments"]["reason"] == "denied"
    assert old["payments"]["rules"] == ["policy.yaml rules[3]"]


def test_explain_text_and_one_view(state: str, capsys: Any) -> None:
    args = ["explain", "io.github.legacy-labs/filesystem", "--config", DEMO, "--state-dir", state]
    assert main([*args, "--view", "payments"]) == 0
    text = capsys.readouterr().out
    assert "io.github.legacy-labs/filesystem" in text
    assert "denied by views/payments.yaml rules[0]" in text
    assert "default " not in text  # only the view asked for
    assert main([*args, "--view", "nope"]) == 1


def test_explain_names_the_cooldown_end(tmp_path: Path, capsys: Any) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.fakes import server_entry

    published = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    upstream = file_upstream(
        tmp_path / "d", "u", [server_entry("io.github.n/new", "1.0.0", published=published)]
    )
    config = write_config(tmp_path / "c", {"upstreams": [upstream]})
    (config.directory / "policy.yaml").write_text("min_age: 72h\n", encoding="utf-8")
    assert main(["sync", "--config", str(config.directory)]) == 0
    capsys.readouterr()
    report = run_json(
        capsys, "explain", "io.github.n/new", "--config", str(config.directory), "--json"
    )
    verdict = report["versions"][0]["views"]["default"]
    assert verdict["reason"] == "cooldown"
    ends = datetime.fromisoformat(verdict["cooldownEndsAt"].replace("Z", "+00:00"))
    expected = datetime.fromisoformat(published.replace("Z", "+00:00")) + timedelta(hours=72)
    assert abs(ends - expected) < timedelta(seconds=1)


def test_diff_dry_run(state: str, capsys: Any) -> None:
    report = run_json(
        capsys, "diff", "--config", DEMO, "--against", PROPOSED, "--state-dir", state, "--json"
    )
    default = report["views"]["default"]
    assert set(default["disappear"]) == {
        "io.github.legacy-labs/filesystem@0.2.0",  # deprecated
        "io.github.pyfolks/sqlite-explorer@0.3.0",  # deprecated
    }
    assert default["appear"] == []
    payments = report["views"]["payments"]
    assert payments["disappear"] == ["io.github.acme-weather/weather@1.3.0-beta.1"]
    assert {"name": "io.github.acme-weather/weather", "from": "1.3.0-beta.1", "to": "1.2.0"} in (
        payments["latestChanged"]
    )
    assert report["views"]["research"]["status"] == "added"
    assert "io.github.legacy-labs/status-page@0.1.0" in report["views"]["research"]["appear"]
    totals = report["totals"]
    assert totals["disappear"] == 3
    assert totals["appear"] == len(report["views"]["research"]["appear"])
    # The text form says the same, and diffing a config against itself finds nothing.
    assert main(["diff", "--config", DEMO, "--against", PROPOSED, "--state-dir", state]) == 0
    text = capsys.readouterr().out
    assert "  - io.github.pyfolks/sqlite-explorer@0.3.0" in text
    same = run_json(
        capsys, "diff", "--config", DEMO, "--against", DEMO, "--state-dir", state, "--json"
    )
    assert same["totals"] == {"appear": 0, "disappear": 0, "latestChanged": 0}
    assert {v["status"] for v in same["views"].values()} == {"unchanged"}


def test_diff_with_a_broken_proposal(state: str, tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "gateway.yaml").write_text("upstreams: [{name: demo}]\n", encoding="utf-8")
    assert main(["diff", "--config", DEMO, "--against", str(tmp_path), "--state-dir", state]) == 1
    assert "give exactly one of url or file" in capsys.readouterr().err


async def test_export_is_served_unchanged_by_another_gateway(
    state: str, tmp_path: Path, capsys: Any, serve: Any
) -> None:
    out = tmp_path / "payments.json"
    assert main(["export", "--view", "payments", "--out", str(out), "--config", DEMO,
                 "--state-dir", state]) == 0  # fmt: skip
    exported = orjson.loads(out.read_bytes())["servers"]
    assert exported
    config = write_config(
        tmp_path / "airgap",
        {"upstreams": [{"name": "handoff", "file": str(out)}], "access_log": False},
    )
    client = await serve(config)
    body = await (await client.get("/v0.1/servers?limit=100&include_deleted=true")).json()
    served = body["servers"]
    official = "io.modelcontextprotocol.registry/official"
    assert [e["server"] for e in served] == [e["server"] for e in exported]
    assert [e["_meta"][official] for e in served] == [e["_meta"][official] for e in exported]
    # The exporting gateway's own _meta travels along, under its own key.
    assert all("admittedBy" in e["_meta"]["com.example.mcp-gateway"] for e in served)
    assert main(["export", "--view", "nope", "--out", str(out), "--config", DEMO]) == 1


def test_config_schema_validates_the_shipped_configs(tmp_path: Path, capsys: Any) -> None:
    schemas = run_json(capsys, "config-schema")
    assert set(schemas) == {
        "gateway.yaml", "policy.yaml", "mirrors.yaml", "views/<view>.yaml", "trust.yaml",
    }  # fmt: skip
    for directory in ("demo", "demo-proposed", "example"):
        root = REPO / "federation_config" / directory
        gateway = yaml.safe_load((root / "gateway.yaml").read_text(encoding="utf-8"))
        jsonschema.validate(gateway, schemas["gateway.yaml"])
        for file in ("policy.yaml", "mirrors.yaml", "trust.yaml"):
            if (root / file).exists():
                document = yaml.safe_load((root / file).read_text(encoding="utf-8"))
                jsonschema.validate(document, schemas[file])
        for view in (root / "views").glob("*.yaml") if (root / "views").exists() else ():
            jsonschema.validate(
                yaml.safe_load(view.read_text(encoding="utf-8")), schemas["views/<view>.yaml"]
            )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"default": "maybe"}, schemas["policy.yaml"])
    assert main(["config-schema", "--out", str(tmp_path / "schemas")]) == 0
    assert sorted(p.name for p in (tmp_path / "schemas").iterdir()) == [
        "gateway.schema.json", "mirrors.schema.json", "policy.schema.json", "trust.schema.json",
        "view.schema.json",
    ]  # fmt: skip


RULE0 = "policy.yaml: rules[0]"
BAD_FILES = [
    ("policy.yaml", "rules:\n  - allow: {colour: red}\n", f"{RULE0}.allow.colour: unknown key"),
    ("policy.yaml", "rules:\n  - allow: {name: 'a b'}\n", f"{RULE0}.allow.name[0]: 'a b' is not"),
    ("policy.yaml", "rules:\n  - allow: {version: '>=x'}\n", f"{RULE0}.allow.version[0]: '>=x'"),
    ("policy.yaml", "rules:\n  - {allow: {}, deny: {}}\n", f"{RULE0}: a rule has exactly one"),
    ("views/Pay Ments.yaml", "default: deny\n", "view name 'Pay Ments' cannot be a URL segment"),
    ("views/default.yaml", "default: deny\n", "view name 'default' is the root view's name"),
    ("views/ops.yaml", "rules: [\n", "views/ops.yaml: not valid YAML"),
    ("views/ops.yaml", "- a\n", "views/ops.yaml: must be a YAML mapping"),
    (
        "mirrors.yaml",
        "npm: 'https://u:p@x.example/'\n",
        "mirrors.yaml: npm[0].url: a mirror URL with credentials",
    ),
    (
        "mirrors.yaml",
        "oci: {ghcr.io: 'https://x.example'}\n",
        "mirrors.yaml: oci.ghcr.io: 'https://x.example' is not a registry host",
    ),
    ("mirrors.yaml", "verify: {mode: maybe}\n", "mirrors.yaml: verify.mode: Input should be"),
]


@pytest.mark.parametrize(("name", "text", "expected"), BAD_FILES)
def test_bad_policy_and_views_are_named(
    tmp_path: Path, capsys: Any, name: str, text: str, expected: str
) -> None:
    gateway = "upstreams: [{name: u, file: x.json}]\n"
    (tmp_path / "gateway.yaml").write_text(gateway, encoding="utf-8")
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text, encoding="utf-8")
    assert main(["check", "--config", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert expected in err, err
