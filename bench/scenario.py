"""The benchmark scenario: upstreams of generated catalogs, a 20-rule policy, 3 views, mirrors."""

from __future__ import annotations

from pathlib import Path

import orjson
import yaml

from bench.generate import generate

PREFIXES = ("io.github", "com.acme", "dev.tools")

POLICY = {
    "default": "allow",
    "rules": [
        {"deny": {"name": "io.github.org1/*"}},
        {"deny": {"name": ["io.github.org2/*", "io.github.org3/*"]}},
        {"deny": {"status": "deleted"}},
        {"allow": {"name": "com.acme.org10/*", "version": ">=0.1,<9"}},
        {"deny": {"remote_host": "*.spam.example"}},
        {"deny": {"name": "*-spam-*"}},
        {"allow": {"upstream": "u0", "name": "io.github.org5/*"}},
        {"deny": {"registry_type": "cargo", "version": "<0.0.5"}},
        {"deny": {"name": "dev.tools.org99*/*"}},
        {"deny": {"transport": "sse"}},
        {"allow": {"name": "io.github.org7/*", "transport": "remote"}},
        {"deny": {"name": "io.github.org8/*", "version": "0.0.1"}},
        {"deny": {"name": "com.acme.org11/*", "registry_type": "mcpb"}},
        {"allow": {"name": "com.acme.org12/*"}},
        {"deny": {"name": "com.acme.org13/*", "status": "deprecated"}},
        {"deny": {"remote_host": ["*.evil.example", "*.bad.example"]}},
        {"deny": {"name": "dev.tools.org98/*", "version": ">=2"}},
        {"allow": {"name": "dev.tools.org97/*"}},
        {"deny": {"name": "io.github.org9/*", "upstream": "u2"}},
        {"deny": {"name": "*/never-*"}},
    ],
    "packages": {"types": ["npm", "pypi", "oci", "nuget", "mcpb", "cargo"]},
}
MIRRORS = {
    "npm": "https://artifactory.example.com/api/npm/npm-remote/",
    "pypi": [
        {"match": "acme-*", "url": "https://artifactory.example.com/api/pypi/internal/simple/"},
        {"url": "https://artifactory.example.com/api/pypi/pypi-remote/simple/"},
    ],
    "nuget": "https://nexus.example.com/repository/nuget-proxy/index.json",
    "cargo": "https://artifactory.example.com/api/cargo/crates-remote/index/",
    "oci": {"docker.io": "registry.example.com/dockerhub", "ghcr.io": "registry.example.com/ghcr"},
    "mcpb": {"https://github.com/": "https://artifactory.example.com/github-releases/"},
}
VIEWS = {
    "payments": {"default": "allow", "rules": [{"deny": {"name": "io.github.*/*"}}],
                 "mirrors": {"npm": "https://artifactory.example.com/api/npm/payments/"}},
    "research": {"default": "deny", "rules": [{"allow": {"transport": "remote"}},
                                               {"allow": {"registry_type": ["npm", "pypi"]}}]},
}  # fmt: skip


def write_catalogs(directory: Path, versions: int, upstreams: int = 3) -> list[Path]:
    """One API-shaped list file per upstream; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(upstreams):
        path = directory / f"u{index}.json"
        if not path.exists():
            items = generate(versions, seed=index + 1, prefix=PREFIXES[index % len(PREFIXES)])
            path.write_bytes(orjson.dumps({"servers": items, "metadata": {"count": len(items)}}))
        paths.append(path)
    return paths


def write_config(
    directory: Path,
    upstreams: list[dict[str, object]],
    *,
    listen: str = "127.0.0.1:0",
    views: bool = True,
    quiet: bool = False,
) -> Path:
    """A config directory: gateway.yaml with these upstreams, and the scenario's policy. The
    logs as users get them (access log on, info level) unless `quiet` (a row that says so)."""
    directory.mkdir(parents=True, exist_ok=True)
    gateway = {
        "listen": listen,
        "state_dir": str(directory / "state"),
        **({"access_log": False, "log_level": "warning"} if quiet else {}),
        "watch_config": "0s",
        "admin_token": "${GATEWAY_ADMIN_TOKEN}",
        "upstreams": upstreams,
    }
    (directory / "gateway.yaml").write_text(yaml.safe_dump(gateway))
    (directory / "policy.yaml").write_text(yaml.safe_dump(POLICY))
    (directory / "mirrors.yaml").write_text(yaml.safe_dump(MIRRORS))
    if views:
        (directory / "views").mkdir(exist_ok=True)
        for name, view in VIEWS.items():
            (directory / "views" / f"{name}.yaml").write_text(yaml.safe_dump(view))
    return directory
