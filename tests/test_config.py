"""`check` and the JSON Schemas the gateway generates agree on every closed set of values.

An editor validating a file against `config-schema`'s output and `check` must refuse the same
mistakes: a duration without a unit, an enum value that does not exist, a registry type nobody
declared. Each bad file below is fed to both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.config import PolicySettings
from gateway.errors import ConfigError
from gateway.fields import format_duration, parse_duration
from gateway.loader import load_config
from gateway.schemas import config_schemas

GOOD_GATEWAY = {"upstreams": [{"name": "official", "url": "https://registry.example.com"}]}
SCHEMA_OF = {"gateway.yaml": "gateway.yaml", "policy.yaml": "policy.yaml",
             "mirrors.yaml": "mirrors.yaml", "views/pay.yaml": "views/<view>.yaml",
             "trust.yaml": "trust.yaml"}  # fmt: skip
FEED = {"name": "osv", "file": "osv.zip", "ecosystems": ["npm"]}


def _upstream(**extra: Any) -> dict[str, Any]:
    return {"upstreams": [{"name": "official", "url": "https://registry.example.com", **extra}]}


# (file, document, the key `check` names)
BAD = [
    ("policy.yaml", {"min_age": 72}, "min_age"),
    ("policy.yaml", {"min_age": "72"}, "min_age"),
    ("policy.yaml", {"min_age": "5 m"}, "min_age"),
    ("policy.yaml", {"min_age": "72h\n"}, "min_age"),
    ("policy.yaml", {"default": "maybe"}, "default"),
    ("policy.yaml", {"packages": {"types": ["npm", "pipy"]}}, "packages.types[1]"),
    (
        "policy.yaml",
        {"rules": [{"deny": {"registry_type": "nmp"}}]},
        "rules[0].deny.registry_type[0]",
    ),
    ("policy.yaml", {"rules": [{"allow": {"transport": "stdin"}}]}, "rules[0].allow.transport"),
    ("policy.yaml", {"rules": [{"deny": {"status": "gone"}}]}, "rules[0].deny.status"),
    ("policy.yaml", {"extra_registry_types": ["Go Lang"]}, "extra_registry_types[0]"),
    ("views/pay.yaml", {"min_age": 7}, "min_age"),
    ("views/pay.yaml", {"packages": {"types": ["pipy"]}}, "packages.types[0]"),
    ("views/pay.yaml", {"mirrors": {"unmirrored": "delete"}}, "mirrors.unmirrored"),
    ("mirrors.yaml", {"unmirrored": "delete"}, "unmirrored"),
    ("mirrors.yaml", {"verify": {"mode": "strict"}}, "verify.mode"),
    ("mirrors.yaml", {"verify": {"ttl": 60}}, "verify.ttl"),
    ("mirrors.yaml", {"verify": {"max_body": 10}}, "verify.max_body"),
    ("gateway.yaml", _upstream(refresh=300), "upstreams[0].refresh"),
    ("gateway.yaml", _upstream(timeout="10 s"), "upstreams[0].timeout"),
    ("gateway.yaml", _upstream(on_stale="drop"), "upstreams[0].on_stale"),
    ("gateway.yaml", _upstream(name="Official"), "upstreams[0].name"),
    ("gateway.yaml", _upstream(name="official\n"), "upstreams[0].name"),
    ("gateway.yaml", {**GOOD_GATEWAY, "log_level": "loud"}, "log_level"),
    ("gateway.yaml", {**GOOD_GATEWAY, "watch_config": 5}, "watch_config"),
    ("gateway.yaml", {**GOOD_GATEWAY, "meta_namespace": "com.example.x\n"}, "meta_namespace"),
    ("gateway.yaml", {**GOOD_GATEWAY, "meta_namespace": "nodots"}, "meta_namespace"),
    ("trust.yaml", {"osv": [{**FEED, "ecosystems": ["nmp"]}]}, "osv[0].ecosystems[0]"),
    ("trust.yaml", {"osv": [{**FEED, "ecosystems": ["oci"]}]}, "osv[0].ecosystems[0]"),
    ("trust.yaml", {"osv": [{**FEED, "ecosystems": []}]}, "osv[0].ecosystems"),
    ("trust.yaml", {"osv": [{**FEED, "refresh": 300}]}, "osv[0].refresh"),
    ("trust.yaml", {"osv": [{**FEED, "name": "OSV"}]}, "osv[0].name"),
    ("trust.yaml", {"osv": [{**FEED, "fiel": "x"}]}, "osv[0].fiel"),
    ("trust.yaml", {"osvv": []}, "osvv"),
    ("policy.yaml", {"rules": [{"deny": {"severity": ">=hihg"}}]}, "rules[0].deny.severity"),
    ("policy.yaml", {"rules": [{"deny": {"severity": ">=unknown"}}]}, "rules[0].deny.severity"),
    ("policy.yaml", {"rules": [{"deny": {"malicious": "yes"}}]}, "rules[0].deny.malicious"),
    ("policy.yaml", {"rules": [{"deny": {"advisory": "GHSA 1"}}]}, "rules[0].deny.advisory"),
]


def _write(directory: Path, file: str, document: dict[str, Any]) -> None:
    (directory / file).parent.mkdir(parents=True, exist_ok=True)
    (directory / file).write_text(yaml.safe_dump(document), encoding="utf-8")


@pytest.mark.parametrize(("file", "document", "key"), BAD, ids=[f"{f}:{k}" for f, _, k in BAD])
def test_check_and_the_schemas_refuse_the_same_files(
    tmp_path: Path, file: str, document: dict[str, Any], key: str
) -> None:
    if file != "gateway.yaml":
        _write(tmp_path, "gateway.yaml", GOOD_GATEWAY)
    _write(tmp_path, file, document)
    with pytest.raises(ConfigError) as refused:
        load_config(tmp_path)
    assert any(i.file == file and i.key.startswith(key) for i in refused.value.issues), str(
        refused.value
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, config_schemas()[SCHEMA_OF[file]])


def test_an_unknown_registry_type_names_the_closest_known_one(tmp_path: Path) -> None:
    _write(tmp_path, "gateway.yaml", GOOD_GATEWAY)
    _write(tmp_path, "policy.yaml", {"packages": {"types": ["npm", "pipy"]}})
    _write(tmp_path, "views/pay.yaml", {"rules": [{"deny": {"registry_type": "nmp"}}]})
    with pytest.raises(ConfigError) as refused:
        load_config(tmp_path)
    assert [str(issue) for issue in refused.value.issues] == [
        "policy.yaml: packages.types[1]: 'pipy' is not a registry type the gateway knows "
        "(npm, pypi, nuget, cargo, go, maven, oci, mcpb): did you mean 'pypi'? a new type can be declared "
        "in policy.yaml extra_registry_types",
        "views/pay.yaml: rules[0].deny.registry_type[0]: 'nmp' is not a registry type the "
        "gateway knows (npm, pypi, nuget, cargo, go, maven, oci, mcpb): did you mean 'npm'? a "
        "new type can be declared in policy.yaml extra_registry_types",
    ]


def test_a_declared_extra_type_is_accepted_by_check_and_by_that_configs_schema(
    tmp_path: Path,
) -> None:
    policy = {"extra_registry_types": ["conda"], "packages": {"types": ["npm", "conda"]},
              "rules": [{"deny": {"registry_type": "conda"}}]}  # fmt: skip
    view = {"packages": {"types": ["conda"]}}
    _write(tmp_path, "gateway.yaml", GOOD_GATEWAY)
    _write(tmp_path, "policy.yaml", policy)
    _write(tmp_path, "views/pay.yaml", view)
    config = load_config(tmp_path)
    assert config.policy.allowed_registry_types()[-1] == "conda"
    schemas = config_schemas(config.policy.extra_registry_types)
    jsonschema.validate(policy, schemas["policy.yaml"])
    jsonschema.validate(view, schemas["views/<view>.yaml"])
    with pytest.raises(jsonschema.ValidationError):  # the plain schemas know no `conda`
        jsonschema.validate(view, config_schemas()["views/<view>.yaml"])


def test_a_rule_naming_an_upstream_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path, "gateway.yaml", GOOD_GATEWAY)
    _write(tmp_path, "policy.yaml", {"rules": [{"allow": {"upstream": ["official", "oficial"]}}]})
    with pytest.raises(ConfigError, match=r"rules\[0\]\.allow\.upstream\[1\]: no upstream is "):
        load_config(tmp_path)


def test_unknown_registry_types_in_upstream_data_stay_data() -> None:
    from datetime import UTC, datetime

    from gateway.entry import parse_item

    server = {"name": "io.x/y", "version": "1.0.0",
              "packages": [{"registryType": "conda", "identifier": "m"}]}  # fmt: skip
    entry = parse_item(server, seen_at=datetime.now(UTC))
    assert entry.registry_types == frozenset({"conda"})


@pytest.mark.parametrize("text", ["90s", "5m", "1.5h", "7d", "250ms", "0s"])
def test_durations_round_trip(text: str) -> None:
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_settings_dump_and_validate_again() -> None:
    """What `serve --listen` does: dump the settings, change a key, validate again."""
    policy = PolicySettings.model_validate({"min_age": "72h"})
    assert PolicySettings.model_validate(policy.model_dump()) == policy


def test_a_trust_rule_with_no_feed_to_answer_it_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path, "gateway.yaml", GOOD_GATEWAY)
    _write(tmp_path, "policy.yaml", {"rules": [{"deny": {"malicious": True}}]})
    _write(tmp_path, "views/pay.yaml", {"rules": [{"allow": {"severity": "<high"}}]})
    with pytest.raises(ConfigError) as refused:
        load_config(tmp_path)
    assert [str(issue) for issue in refused.value.issues] == [
        "policy.yaml: rules[0].deny.malicious: no advisory feed is configured (trust.yaml: osv): "
        "it would never match",
        "views/pay.yaml: rules[0].allow.severity: no advisory feed is configured (trust.yaml: "
        "osv): it would never match",
    ]
    _write(tmp_path, "trust.yaml", {"osv": [FEED]})
    config = load_config(tmp_path)
    assert config.trust.osv[0].file == tmp_path / "osv.zip"  # resolved against the directory
