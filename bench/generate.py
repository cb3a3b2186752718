"""Realistic synthetic catalogs, shaped like the production registry (2026-08 figures).

Per entry (wrapper, compact JSON): median ~0.75 KB, mean ~1.0 KB, p90 ~1.6 KB, max ~58 KB.
Latest versions: ~41 % remote-only; packages npm ~32 %, pypi ~15 %, oci ~8 %, mcpb ~3 %,
nuget ~1 %, cargo a handful; `repository: {}` in ~10 %; ~3.3 versions per server.
"""

from __future__ import annotations

import random
from typing import Any

OFFICIAL = "io.modelcontextprotocol.registry/official"
SCHEMA = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
WORDS = [
    "search",
    "files",
    "issues",
    "pull",
    "requests",
    "weather",
    "calendar",
    "database",
    "query",
    "metrics",
    "logs",
    "deploy",
    "tickets",
    "slack",
    "email",
    "notes",
    "docs",
    "wiki",
    "kubernetes",
    "cloud",
    "storage",
    "vector",
    "memory",
    "browser",
]


def _package(kind: str, name: str, version: str, rng: random.Random) -> dict[str, Any]:
    stdio = {"type": "stdio"}
    if kind == "npm":
        return {"registryType": "npm", "identifier": f"@{name.split('/')[0].split('.')[-1]}/{name.split('/')[1]}",
                "version": version, "runtimeHint": "npx", "transport": stdio}  # fmt: skip
    if kind == "pypi":
        return {"registryType": "pypi", "identifier": name.split("/")[1], "version": version,
                "runtimeHint": "uvx", "transport": stdio}  # fmt: skip
    if kind == "oci":
        host = rng.choice(["ghcr.io/", "docker.io/", ""])
        return {"registryType": "oci", "identifier": f"{host}{name.replace('.', '-')}:{version}",
                "runtimeHint": "docker", "transport": stdio}  # fmt: skip
    if kind == "mcpb":
        return {"registryType": "mcpb", "transport": stdio, "fileSha256": f"{rng.getrandbits(256):064x}",
                "identifier": f"https://github.com/{name}/releases/download/v{version}/server.mcpb"}  # fmt: skip
    if kind == "nuget":
        return {"registryType": "nuget", "identifier": name.split("/")[1].title(), "version": version,
                "runtimeHint": "dnx", "transport": stdio}  # fmt: skip
    return {
        "registryType": "cargo",
        "identifier": name.split("/")[1],
        "version": version,
        "transport": stdio,
    }


def _padding(rng: random.Random) -> list[dict[str, Any]]:
    """Environment variables sized so entries follow the production size distribution."""
    target = min(int(rng.lognormvariate(5.6, 1.05)), 57_000)  # bytes of extra text
    if rng.random() < 0.0005:
        target = rng.randint(30_000, 57_000)  # the rare kitchen-sink entry
    variables: list[dict[str, object]] = []
    used = 0
    while used < target:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16)))
        variables.append(
            {"name": f"OPTION_{len(variables)}", "description": text, "isRequired": False}
        )
        used += len(text) + 50
    return variables


def generate(versions: int, *, seed: int = 1, prefix: str = "io.github") -> list[dict[str, Any]]:
    """`versions` ServerResponse items (API shape), names unique per `prefix`."""
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    server = 0
    while len(items) < versions:
        server += 1
        name = f"{prefix}.org{server % 997}/{rng.choice(WORDS)}-{rng.choice(WORDS)}-{server}"
        count = min(1 + int(rng.expovariate(1 / 2.3)), versions - len(items))
        roll = rng.random()
        remote_only = roll < 0.41
        kind = rng.choices(
            ["npm", "pypi", "oci", "mcpb", "nuget", "cargo"], [32, 15, 8, 3, 1, 0.2]
        )[0]
        empty_repo = rng.random() < 0.10
        padding = _padding(rng)
        for index in range(count):
            version = f"{index // 3}.{index % 3}.{rng.randint(0, 9)}"
            day = 1 + (server + index * 7) % 500
            published = f"2025-{1 + day // 28 % 12:02d}-{1 + day % 28:02d}T{index % 24:02d}:00:00Z"
            body: dict[str, Any] = {
                "$schema": SCHEMA,
                "name": name,
                "description": " ".join(rng.choice(WORDS) for _ in range(8))[:100],
                "repository": {}
                if empty_repo
                else {"url": f"https://github.com/{name}", "source": "github"},
                "version": version,
            }
            if remote_only:
                body["remotes"] = [
                    {"type": "streamable-http", "url": f"https://mcp.{server}.example.com/mcp"}
                ]
            else:
                package = _package(kind, name, version, rng)
                if padding:
                    package["environmentVariables"] = padding
                body["packages"] = [package]
            items.append({
                "server": body,
                "_meta": {OFFICIAL: {"status": "active", "publishedAt": published, "updatedAt": published,
                                     "isLatest": index == count - 1}},
            })  # fmt: skip
    return items
