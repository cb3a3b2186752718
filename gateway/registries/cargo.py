"""Cargo: crates by name, from a sparse index given as `registryBaseUrl`.

A mirror is asked for the crate's index file (one JSON line per version; yanked versions do
not count). `cargo install --index sparse+<mirror>` installs a version from it."""

from __future__ import annotations

import re
from urllib.parse import quote

import orjson

from gateway.errors import MirrorGarbled
from gateway.registries.base import SEMVER, Ask, Check, Index


def index_path(name: str) -> str:
    """Where a crate's file sits in a sparse index (cargo's layout)."""
    lower = name.lower()
    if len(lower) <= 2:
        return f"{len(lower)}/{lower}"
    if len(lower) == 3:
        return f"3/{lower[0]}/{lower}"
    return f"{lower[:2]}/{lower[2:4]}/{lower}"


class Cargo(Index):
    name = "cargo"
    public = "crates.io"
    public_hosts = frozenset({"crates.io", "index.crates.io"})
    identifier = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
    osv = "crates.io"
    _exact = SEMVER  # `1.x`, `^1.2` and `1` are ranges to it
    _build_ignored = True
    _versions = "SemverVersion"  # cargo orders SemVer 2.0

    def osv_name(self, identifier: str) -> str:
        return identifier.lower()  # crates.io takes names in any case as one crate

    def ask(self, check: Check) -> Ask:
        base = check.location.removeprefix("sparse+").rstrip("/")
        return Ask(f"{base}/{quote(index_path(check.identifier))}", base + "/", "*/*")

    def versions(self, body: bytes, content_type: str, check: Check) -> frozenset[str]:
        found = set()
        for line in body.splitlines():
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise MirrorGarbled("cargo index line is not JSON") from None
            if isinstance(record, dict) and not record.get("yanked"):
                found.add(str(record.get("vers")))
        return frozenset(found)

    def argv(self, identifier: str, version: str, base: str) -> list[str]:
        pinned = ["--version", version] if version else []
        index = ["--index", f"sparse+{base}"] if base else []
        return ["cargo", "install", identifier, *pinned, *index]


CARGO = Cargo()
