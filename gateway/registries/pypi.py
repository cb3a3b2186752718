"""PyPI: projects by name (normalised as PEP 503 says), from a simple index given as
`registryBaseUrl`.

A mirror is asked for the project's simple page (PEP 691 JSON, HTML as a fallback), whose
files name its versions; versions compare as pip reads them (PEP 440, from `packaging`).
`uvx --index-url <mirror>` runs a version from it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from html.parser import HTMLParser
from urllib.parse import quote

import orjson
from packaging.version import InvalidVersion, Version

from gateway.errors import MirrorGarbled
from gateway.registries.base import Ask, Check, Index
from gateway.signals import PypiFile

_SEPARATORS = re.compile(r"[-_.]+")
_ARCHIVES = (".tar.gz", ".zip", ".tar.bz2", ".tgz")


def normalized(name: str) -> str:
    """A project name as PEP 503 compares it."""
    return _SEPARATORS.sub("-", name).lower()


def _pep440(version: str) -> Version | None:
    try:
        return Version(version)
    except InvalidVersion:
        return None


def file_versions(name: str, filenames: Iterable[str]) -> set[str]:
    """Versions named by distribution files (wheels and sdists) of a project."""
    wanted = normalized(name)
    found = set()
    for filename in filenames:
        if filename.endswith(".whl"):
            parts = filename[:-4].split("-")
            if len(parts) >= 5 and normalized(parts[0]) == wanted:
                found.add(parts[1])
            continue
        for extension in _ARCHIVES:
            if filename.endswith(extension):
                project, _, version = filename[: -len(extension)].rpartition("-")
                if project and normalized(project) == wanted:
                    found.add(version)
    return found


class _Links(HTMLParser):
    """The file names an HTML simple page links to, with the `#sha256=` of each and its
    PEP 740 `data-provenance` URL and PEP 592 `data-yanked` mark."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.hashes: list[str | None] = []
        self.provenance: list[str | None] = []
        self.yanked: list[bool] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            found = dict(attrs)
            href = found.get("href") or ""
            path, _, fragment = href.partition("#")
            self.names.append(path.rstrip("/").rsplit("/", 1)[-1])
            algorithm, _, value = fragment.partition("=")
            self.hashes.append(value.lower() if algorithm == "sha256" else None)
            provenance = found.get("data-provenance")
            self.provenance.append(provenance if provenance and len(provenance) <= 4096 else None)
            self.yanked.append("data-yanked" in found)


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _sha256(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.lower()
    return value if _SHA256.fullmatch(value) else None


def _files(body: bytes, content_type: str) -> list[PypiFile]:
    """The files a simple page lists (see `Pypi.distributions`)."""
    if "json" not in content_type:
        parser = _Links()
        parser.feed(body.decode("utf-8", "replace"))
        return [PypiFile(name, _sha256(sha), provenance, yanked)
                for name, sha, provenance, yanked in zip(parser.names, parser.hashes,
                                                         parser.provenance, parser.yanked,
                                                         strict=True)]  # fmt: skip
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MirrorGarbled("PEP 691 answer is not JSON") from None
    files = document.get("files") if isinstance(document, dict) else None
    found = []
    for item in files if isinstance(files, list) else ():
        if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
            continue
        hashes = item.get("hashes")
        provenance = item.get("provenance")
        found.append(PypiFile(
            item["filename"],
            _sha256(hashes.get("sha256")) if isinstance(hashes, dict) else None,
            provenance if isinstance(provenance, str) and len(provenance) <= 4096 else None,
            bool(item.get("yanked")),
        ))  # fmt: skip
    return found


class Pypi(Index):
    name = "pypi"
    public = "pypi.org"
    public_hosts = frozenset({"pypi.org", "pypi.python.org"})
    identifier = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
    osv = "PyPI"
    _versions = "PypiVersion"  # PEP 440, from `packaging`

    def osv_name(self, identifier: str) -> str:
        return normalized(identifier)

    def same_version(self, wanted: str, offered: str) -> bool:
        # PEP 440 equality, as pip reads versions: 2.0.0-rc.1 is 2.0.0rc1, 1.1 is 1.1.0.
        mine, theirs = _pep440(wanted), _pep440(offered)
        return mine == theirs if mine is not None else wanted == offered

    def cache_name(self, identifier: str) -> str:
        return normalized(identifier)

    def ask(self, check: Check) -> Ask:
        url = f"{check.location.rstrip('/')}/{quote(normalized(check.identifier))}/"
        return Ask(url, check.location, "application/vnd.pypi.simple.v1+json, text/html;q=0.1")

    def versions(self, body: bytes, content_type: str, check: Check) -> frozenset[str]:
        if "json" in content_type:
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise MirrorGarbled("PEP 691 answer is not JSON") from None
            if not isinstance(document, dict):
                raise MirrorGarbled("PEP 691 answer is not an object")
            if isinstance(document.get("versions"), list):  # PEP 700
                return frozenset(str(v) for v in document["versions"])
            files = document.get("files") or []
            names = [f.get("filename", "") for f in files if isinstance(f, dict)]
            return frozenset(file_versions(check.identifier, names))
        parser = _Links()
        parser.feed(body.decode("utf-8", "replace"))
        return frozenset(file_versions(check.identifier, parser.names))

    def distributions(
        self, body: bytes, content_type: str, check: Check
    ) -> dict[str, tuple[PypiFile, ...]]:
        """Each version's files, with their sha256 and PEP 740 provenance URL: a PEP 691 JSON
        page says both (`hashes.sha256`, `provenance`); an HTML page only the sha256, in each
        link's `#sha256=` fragment. Whatever has the wrong shape is left out."""
        found: dict[str, list[PypiFile]] = {}
        for item in _files(body, content_type):
            versions = file_versions(check.identifier, [item.filename])
            for version in versions:
                found.setdefault(version, []).append(item)
        return {version: tuple(files) for version, files in found.items()}

    def argv(self, identifier: str, version: str, base: str) -> list[str]:
        at = f"{identifier}@{version}" if version else identifier
        return ["uvx", *(["--index-url", base] if base else []), at]


PYPI = Pypi()
