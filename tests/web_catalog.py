"""A small catalog for the web page tests: every kind of entry a page must show, a hostile one,
a policy that hides some versions for different reasons, mirrors and a view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.config import FederationConfig
from gateway.loader import load_config
from tests.conftest import file_upstream, write_config
from tests.fakes import server_entry

HOSTILE = '<script>alert("xss")</script><img src=x onerror=alert(1)>'
NPM_MIRROR = "https://artifactory.example.com/api/npm/npm-remote/"
PYPI_MIRROR = "https://artifactory.example.com/api/pypi/pypi-remote/simple/"
PAYMENTS_NPM = "https://artifactory.example.com/api/npm/payments/"
ADMIN_TOKEN = "web-admin-token"


def npm(identifier: str, version: str) -> dict[str, Any]:
    return {"registryType": "npm", "identifier": identifier, "version": version,
            "transport": {"type": "stdio"},
            "environmentVariables": [{"name": "WEATHER_API_KEY", "isSecret": True}]}  # fmt: skip


ENTRIES = [
    server_entry(
        "io.github.acme/weather", "1.0.0", packages=[npm("@acme/weather", "1.0.0")],
        title="Acme Weather", description="Forecasts and alerts.",
        icons=[{"src": "https://acme.example.com/icon.png", "mimeType": "image/png"}],
        repository={"url": "https://github.com/acme/weather", "source": "github"},
    ),
    server_entry(
        "io.github.acme/weather", "1.1.0", published="2026-02-01T00:00:00Z",
        packages=[npm("@acme/weather", "1.1.0"),
                  {"registryType": "pypi", "identifier": "acme-weather", "version": "1.1.0"}],
        title="Acme Weather", description="Forecasts and alerts.",
        icons=[{"src": "https://acme.example.com/icon.png", "mimeType": "image/png"}],
        repository={"url": "https://github.com/acme/weather", "source": "github"},
    ),
    server_entry(  # denied by a rule: shown on the server page as hidden, with the rule
        "io.github.acme/weather", "0.9.0-beta", published="2025-12-01T00:00:00Z",
        packages=[npm("@acme/weather", "0.9.0-beta")], title="Acme Weather",
    ),
    server_entry(  # too young: held back by min_age (published in the future of the others)
        "io.github.acme/weather", "2.0.0", published="2099-01-01T00:00:00Z",
        packages=[npm("@acme/weather", "2.0.0")], title="Acme Weather",
    ),
    server_entry(
        "io.github.evil/mallory", "1.0.0", title=HOSTILE, description=HOSTILE,
        packages=[npm("@evil/mallory", "1.0.0")],
        icons=[{"src": "javascript:alert(1)"}], websiteUrl="javascript:alert(1)",
    ),
    server_entry(
        "com.example/old-tool", "3.2.0", status="deprecated",
        packages=[{"registryType": "oci", "identifier": "ghcr.io/example/old-tool:3.2.0"}],
        description="Superseded by new-tool.",
    ),
    server_entry(
        "com.example/remote-only", "1.0.0",
        remotes=[{"type": "streamable-http", "url": "https://mcp.example.com/mcp"}],
        description="Hosted by Example.",
    ),
] + [
    server_entry(f"io.github.filler/server-{index:03d}", "1.0.0", description="Filler.")
    for index in range(60)  # more than one page of 50
]  # fmt: skip


def write_web_config(
    directory: Path, extra_upstreams: tuple[dict[str, Any], ...] = (), **gateway: Any
) -> FederationConfig:
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "policy.yaml": {
            "rules": [{"deny": {"name": "io.github.acme/weather", "version": "0.9.0-beta"}}],
            "min_age": "1d",
        },
        "mirrors.yaml": {
            "npm": NPM_MIRROR,
            "pypi": PYPI_MIRROR,
            "oci": {"ghcr.io": "registry.example.com/ghcr"},
        },
        "views/payments.yaml": {
            "description": "What the payments teams may install: nothing from io.github.evil.",
            "rules": [{"deny": {"name": "io.github.evil/*"}}],
            "mirrors": {"npm": PAYMENTS_NPM},
        },
    }
    for path, document in files.items():
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_text(yaml.safe_dump(document), encoding="utf-8")
    upstream = file_upstream(directory / "data", "demo", ENTRIES)
    upstreams = [upstream, *extra_upstreams]
    settings = {"admin_token": ADMIN_TOKEN, "access_log": False, "upstreams": upstreams}
    return write_config(directory, {**settings, **gateway})


def write_verified_web_config(directory: Path, npm_mirror: str) -> FederationConfig:
    """The web catalog with its npm packages checked (`verify: annotate`) on a loopback
    mirror; the payments view, whose mirror is not on loopback, left out."""
    write_web_config(directory)
    (directory / "mirrors.yaml").write_text(
        yaml.safe_dump({"npm": npm_mirror, "verify": {"mode": "annotate"}})
    )
    (directory / "views" / "payments.yaml").unlink()
    return load_config(directory)


WORDS = ("weather", "calendar", "postgres", "tickets", "search", "files", "metrics", "billing",
         "slack", "kubernetes", "invoices", "translate", "maps", "notes", "builds")  # fmt: skip


def many_entries(count: int) -> list[dict[str, Any]]:
    """`count` servers of every kind a large catalog has: npm, PyPI and OCI packages, remotes,
    deprecated ones, a spread of update times, a few versions each; about one in twelve from
    io.github.blocked, which policy.yaml denies (in every view)."""
    entries = []
    for index in range(count):
        word = WORDS[index % len(WORDS)]
        owner = "blocked" if index % 12 == 5 else f"team{index % 40:02d}"
        name = f"io.github.{owner}/{word}-{index:05d}"
        updated = f"2026-{1 + index % 11:02d}-{1 + index % 27:02d}T{index % 24:02d}:00:00Z"
        kind = index % 4
        common: dict[str, Any] = {"title": f"{word.capitalize()} {index}", "updated": updated,
                  "status": "deprecated" if index % 9 == 4 else "active",
                  "description": f"Works with {word} for team {index % 40}: server {index}."}  # fmt: skip
        for minor in range(1 + index % 3):
            version = f"1.{minor}.0"
            if kind == 0:
                package = npm(f"@{owner}/{word}-{index}", version)
            elif kind == 1:
                package = {"registryType": "pypi", "identifier": f"{word}-{index}",
                           "version": version, "transport": {"type": "stdio"}}  # fmt: skip
            elif kind == 2:
                package = {"registryType": "oci", "transport": {"type": "stdio"},
                           "identifier": f"ghcr.io/{owner}/{word}-{index}:{version}"}  # fmt: skip
            if kind == 3:
                remote = {"type": "streamable-http", "url": f"https://{word}.example.com/{index}"}
                entries.append(server_entry(name, version, remotes=[remote], **common))
            else:
                entries.append(server_entry(name, version, packages=[package], **common))
    return entries


def write_many_config(directory: Path, count: int, **gateway: Any) -> FederationConfig:
    """The web catalog's config over `count` generated servers (`many_entries`)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "policy.yaml": {"rules": [{"deny": {"name": "io.github.blocked/*"}}]},
        "mirrors.yaml": {
            "npm": NPM_MIRROR,
            "pypi": PYPI_MIRROR,
            "oci": {"ghcr.io": "registry.example.com/ghcr"},
        },
        "views/payments.yaml": {
            "description": "What the payments teams may install: no team07 servers.",
            "rules": [{"deny": {"name": "io.github.team07/*"}}],
        },
    }
    for path, document in files.items():
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_text(yaml.safe_dump(document), encoding="utf-8")
    upstream = file_upstream(directory / "data", "many", many_entries(count))
    settings = {"admin_token": ADMIN_TOKEN, "access_log": False, "upstreams": [upstream]}
    return write_config(directory, {**settings, **gateway})
