"""MCP bundles (mcpb): a download URL in `identifier`, its digest in `fileSha256`.

Mirrored by URL prefix (`https://github.com/` -> a generic remote repository); the rest of the
URL comes from upstream data and may not climb out of the prefix, as a server would decode it
(`%2e%2e`, `..%2f`...). A mirror is asked with `HEAD` (or a one-byte `GET`); the command shown
downloads the bundle with curl, over http(s) only."""

from __future__ import annotations

import re

from gateway.locations import within
from gateway.registries.base import Check, Ecosystem, Package, Rewritten, location_of, unchanged


def mirrored(identifier: str, prefixes: list[tuple[str, str]]) -> str | None:
    """The mirrored download URL, or None (no rule covers it, or it would leave the prefix)."""
    for source, target in prefixes:
        if identifier.startswith(source) and within(identifier, source):
            rest = identifier[len(source) :]
            moved = target.rstrip("/") + "/" + rest.lstrip("/")
            return moved if within(moved, target) else None
    return None


class Mcpb(Ecosystem):
    name = "mcpb"
    public = "the publisher's download URL"
    identifier = re.compile(r"https?://[^\s\"'<>{}\[\]\\^`|]+")

    def rewrite(
        self, package: Package, identifier: str, prefixes: list[tuple[str, str]]
    ) -> Rewritten:
        target = mirrored(identifier, prefixes)
        if target is None:
            return unchanged(package)
        return Rewritten(
            {**package, "identifier": target}, location_of(package, "identifier"), True
        )

    def check(self, package: Package) -> Check | None:
        identifier = package.get("identifier")
        if isinstance(identifier, str) and identifier.startswith(("https://", "http://")):
            return Check(self.name, identifier, identifier, "")
        return None

    def argv(self, identifier: str, version: str, base: str) -> list[str]:
        # A download, over http(s) only (no file: or other schemes), no URL globbing.
        return ["curl", "--proto", "=http,https", "-g", "-fLO", identifier]


MCPB = Mcpb()
