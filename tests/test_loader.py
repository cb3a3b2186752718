"""Config directories: every mistake is one clear line naming the file and the dotted key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.loader import load_config

REPO = Path(__file__).resolve().parents[1]


def config_dir(tmp_path: Path, text: str) -> Path:
    (tmp_path / "gateway.yaml").write_text(text, encoding="utf-8")
    return tmp_path


def issues(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir(tmp_path, text))
    return [str(issue) for issue in caught.value.issues]


GOOD_UPSTREAM = "  - {name: official, url: 'https://registry.example.com'}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "upstreams:\n  - {name: a, url: 'https://r.example.com', refrsh: 5m}\n",
            "gateway.yaml: upstreams[0].refrsh: unknown key",
        ),
        (
            "upstreams:\n" + GOOD_UPSTREAM + "  - {name: b, url: 'ftp://nope'}\n",
            "gateway.yaml: upstreams[1].url: 'ftp://nope' is not an http(s) URL",
        ),
        (
            "upstreams:\n" + GOOD_UPSTREAM + GOOD_UPSTREAM,
            "gateway.yaml: upstreams[1].name: upstream name 'official' is used twice",
        ),
        (
            "upstreams:\n  - {name: a, url: 'https://r.example.com', refresh: soon}\n",
            "gateway.yaml: upstreams[0].refresh: 'soon' is not a duration like 90s, 5m, 1h or 7d",
        ),
        (
            "admin_token: '${SURELY_NOT_SET_ANYWHERE}'\nupstreams:\n" + GOOD_UPSTREAM,
            "gateway.yaml: admin_token: environment variable SURELY_NOT_SET_ANYWHERE is not set",
        ),
        (
            "admin_token: '  '\nupstreams:\n" + GOOD_UPSTREAM,
            "gateway.yaml: admin_token: it is empty: set a token, or leave the key out",
        ),
        (
            "upstreams:\n  - {name: a}\n",
            "gateway.yaml: upstreams[0]: give exactly one of url or file",
        ),
        (
            "listen: 'everywhere'\nupstreams:\n" + GOOD_UPSTREAM,
            "gateway.yaml: listen: 'everywhere' is not HOST:PORT (for example 0.0.0.0:8080)",
        ),
        ("upstreams: []\n", "gateway.yaml: upstreams: List should have at least 1 item"),
        ("upstreams: [\n", "gateway.yaml: not valid YAML"),
        ("- just\n- a list\n", "gateway.yaml: must be a YAML mapping of keys to values"),
    ],
)
def test_each_mistake_is_named(tmp_path: Path, text: str, expected: str) -> None:
    found = issues(tmp_path, text)
    assert any(line.startswith(expected) for line in found), found


def test_all_mistakes_reported_at_once(tmp_path: Path) -> None:
    found = issues(
        tmp_path,
        "listen: nowhere\nupstreams:\n  - {name: a, url: 'x', timeout: forever}\n",
    )
    assert len(found) == 3, found


def test_interpolation_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "token.txt"
    secret.write_text("  from-file-token\n", encoding="utf-8")
    monkeypatch.setenv("REG_HOST", "registry.example.com")
    config = load_config(
        config_dir(
            tmp_path,
            "admin_token: '${file:" + str(secret) + "}'\n"
            "upstreams:\n"
            "  - name: official\n"
            "    url: 'https://${REG_HOST}/'\n"
            "    headers: {Authorization: 'Bearer ${file:" + str(secret) + "}'}\n",
        )
    )
    gateway = config.gateway
    assert gateway.admin_token is not None
    assert gateway.admin_token.get_secret_value() == "from-file-token"
    assert gateway.upstreams[0].url == "https://registry.example.com"
    header = gateway.upstreams[0].headers["Authorization"]
    assert header.get_secret_value() == "Bearer from-file-token"
    assert "from-file-token" not in repr(gateway)  # secrets never print


def test_missing_secret_file(tmp_path: Path) -> None:
    found = issues(tmp_path, "admin_token: '${file:/no/such/file}'\nupstreams:\n" + GOOD_UPSTREAM)
    assert found == [
        "gateway.yaml: admin_token: cannot read /no/such/file: No such file or directory"
    ]


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    config = load_config(
        config_dir(tmp_path, "state_dir: st\nupstreams:\n  - {name: f, file: data/c.json}\n")
    )
    assert config.gateway.state_dir == tmp_path.resolve() / "st"
    assert config.gateway.upstreams[0].file == tmp_path.resolve() / "data" / "c.json"


def test_missing_directory_and_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a directory"):
        load_config(tmp_path / "absent")
    with pytest.raises(ConfigError, match=r"gateway\.yaml: missing"):
        load_config(tmp_path)


@pytest.mark.parametrize("name", ["example", "demo"])
def test_shipped_configs_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "t")
    for variable in (
        "INTERNAL_REGISTRY_TOKEN",
        "ARTIFACTORY_TOKEN",
        "REGISTRY_USER",
        "REGISTRY_PASSWORD",
    ):
        monkeypatch.setenv(variable, "t")
    config = load_config(REPO / "federation_config" / name)
    assert config.gateway.upstreams


def _keys(model: type) -> set[str]:
    from pydantic import BaseModel

    found: set[str] = set()
    for field_name, field in model.model_fields.items():  # type: ignore[attr-defined]
        found.add(field_name)
        annotation = field.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                found |= _keys(candidate)
    return found


@pytest.mark.parametrize(
    ("file", "model"),
    [
        ("gateway.yaml", "GatewaySettings"),
        ("policy.yaml", "PolicySettings"),
        ("mirrors.yaml", "MirrorSettings"),
        ("views/payments.yaml", "ViewSettings"),
        ("trust.yaml", "TrustSettings"),
    ],
)
def test_example_config_documents_every_key(file: str, model: str) -> None:
    import gateway.config

    text = (REPO / "federation_config" / "example" / file).read_text(encoding="utf-8")
    settings = getattr(gateway.config, model)
    # A view's nested rules and mirrors use the documented shapes of policy.yaml and mirrors.yaml.
    keys = set(settings.model_fields) if file.startswith("views/") else _keys(settings)
    missing = sorted(k for k in keys if not re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", text))
    assert missing == [], f"keys missing from federation_config/example/{file}: {missing}"


# -- config cannot take the gateway down -------------------------------------------------------

LAUGHS = "a: &a ['lol', 'lol', 'lol', 'lol', 'lol', 'lol', 'lol', 'lol', 'lol']\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)  # nine lines that expand to 9**9 strings


@pytest.mark.parametrize("file", ["gateway.yaml", "policy.yaml", "mirrors.yaml", "views/v.yaml"])
@pytest.mark.timeout(10)
def test_yaml_anchors_and_aliases_are_refused_in_every_file(tmp_path: Path, file: str) -> None:
    good = "upstreams:\n" + GOOD_UPSTREAM
    (tmp_path / "views").mkdir()
    (tmp_path / "gateway.yaml").write_text(LAUGHS + good if file == "gateway.yaml" else good)
    if file != "gateway.yaml":
        (tmp_path / file).write_text(LAUGHS, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert [str(i) for i in caught.value.issues] == [
        f"{file}: not valid YAML: line 1, column 4: anchors and aliases (& and *) are not allowed"
    ]


def test_a_lone_anchor_and_a_merge_key_are_refused_too(tmp_path: Path) -> None:
    text = "upstreams:\n  - &u {name: a, url: 'https://r.example.com'}\n"
    assert "anchors and aliases" in issues(tmp_path, text)[0]
    merge = "x: &x {refresh: 5m}\nupstreams:\n  - {<<: *x, name: a, url: 'https://r.example'}\n"
    assert "anchors and aliases" in issues(tmp_path, merge)[0]


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    text = "upstreams:\n" + GOOD_UPSTREAM + "x: " + "[" * 5000 + "]" * 5000 + "\n"
    assert "nested more than 64 deep" in issues(tmp_path, text)[0]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("source", ["/dev/zero", "/dev/urandom", "fifo", "big", "directory"])
def test_file_references_read_only_small_regular_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    import os

    if source == "fifo":  # nobody ever writes to it: reading would wait forever
        os.mkfifo(tmp_path / "fifo")
        source = str(tmp_path / "fifo")
    elif source == "big":
        (tmp_path / "big").write_bytes(b"x" * (1024 * 1024 + 1))
        source = str(tmp_path / "big")
    elif source == "directory":
        source = str(tmp_path)
    text = f"admin_token: '${{file:{source}}}'\nupstreams:\n" + GOOD_UPSTREAM
    reason = "larger than 1048576 bytes" if source.endswith("big") else "not a regular file"
    assert issues(tmp_path, text) == [f"gateway.yaml: admin_token: cannot read {source}: {reason}"]


def test_a_secret_file_is_still_read(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n", encoding="utf-8")
    text = f"admin_token: '${{file:{tmp_path / 'token'}}}'\nupstreams:\n" + GOOD_UPSTREAM
    config = load_config(config_dir(tmp_path, text))
    assert config.gateway.admin_token is not None
    assert config.gateway.admin_token.get_secret_value() == "s3cret"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", ["fifo", "big"])
def test_config_files_themselves_are_bounded_regular_files(tmp_path: Path, kind: str) -> None:
    import os

    (tmp_path / "gateway.yaml").write_text("upstreams:\n" + GOOD_UPSTREAM, encoding="utf-8")
    if kind == "fifo":
        os.mkfifo(tmp_path / "policy.yaml")
    else:
        (tmp_path / "policy.yaml").write_text("#" * (1024 * 1024 + 1), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    reason = "not a regular file" if kind == "fifo" else "larger than 1048576 bytes"
    assert [str(i) for i in caught.value.issues] == [f"policy.yaml: cannot read: {reason}"]
