"""Go: modules by path (`github.com/acme/tool`), from a module proxy (GOPROXY) given as
`registryBaseUrl`.

A mirror is asked for the module's version list (`<module>/@v/list`, the path case-encoded as
the GOPROXY protocol says: each capital letter as `!` and the letter in lower case). Versions
are Go's (`v1.2.3`; a version given without its `v` means the same). `GOPROXY=<mirror> go run
module@version` runs a version from the mirror."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import quote

from gateway.errors import MirrorGarbled
from gateway.registries.base import SEMVER, Ask, Check, Index

if TYPE_CHECKING:
    from univers.versions import Version

# A module path: a host-like first element with a dot, then path elements (no `..`).
_PATH = re.compile(
    r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+"
    r"(?:/[A-Za-z0-9_~+-]+(?:\.[A-Za-z0-9_~+-]+)*)*"
)
_CAPITAL = re.compile(r"[A-Z]")
MAX_LIST_LINES = 100_000


def escaped(path: str) -> str:
    """The module path as the GOPROXY protocol spells it in URLs."""
    return _CAPITAL.sub(lambda capital: "!" + capital.group().lower(), path)


def _canonical(version: str) -> str:
    return version if version.startswith("v") else "v" + version


class Go(Index):
    name = "go"
    public = "proxy.golang.org"
    public_hosts = frozenset({"proxy.golang.org"})
    identifier = _PATH
    osv = "Go"
    _exact = re.compile(r"v" + SEMVER.pattern)  # `v1` is not a version to go
    _versions = "GolangVersion"  # `v` SemVer, pseudo-versions and `+incompatible` as go reads them

    def order(self, version: str) -> Version | None:
        return super().order(_canonical(version))

    def same_version(self, wanted: str, offered: str) -> bool:
        return _canonical(wanted) == _canonical(offered)

    def ask(self, check: Check) -> Ask:
        base = check.location.rstrip("/")
        url = f"{base}/{quote(escaped(check.identifier), safe='/!')}/@v/list"
        return Ask(url, base + "/", "text/plain")

    def versions(self, body: bytes, content_type: str, check: Check) -> frozenset[str]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise MirrorGarbled("GOPROXY version list is not UTF-8 text") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) > MAX_LIST_LINES or any(" " in line for line in lines):
            raise MirrorGarbled("GOPROXY version list is not one version per line")
        return frozenset(lines)

    def argv(self, identifier: str, version: str, base: str) -> list[str]:
        at = f"{identifier}@{_canonical(version)}" if version else f"{identifier}@latest"
        return [*([f"GOPROXY={base}"] if base else []), "go", "run", at]


GO = Go()
