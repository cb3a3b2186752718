"""Maven: artifacts by `groupId:artifactId`, from a maven2 repository given as
`registryBaseUrl`.

A mirror is asked for the artifact's `maven-metadata.xml`, read as hostile input: bounded in
size by the caller, and refused when it declares a DOCTYPE or an entity (the XML features
that let a small document expand or reach elsewhere). `jbang --repos mirror=<mirror>
group:artifact:version` runs a version from it."""

from __future__ import annotations

import re
from urllib.parse import quote
from xml.parsers import expat

from gateway.errors import MirrorGarbled
from gateway.registries.base import Ask, Check, Index

_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
_COORDINATES = re.compile(rf"{_PART}:{_PART}")
MAX_VERSIONS = 100_000


def metadata_path(identifier: str) -> str:
    """`com.acme:tool` -> `com/acme/tool/maven-metadata.xml` (maven2 layout)."""
    group, _, artifact = identifier.partition(":")
    return f"{group.replace('.', '/')}/{artifact}/maven-metadata.xml"


class _Refused(Exception):
    pass


def _refuse(*_: object) -> int:
    raise _Refused


def metadata_versions(body: bytes) -> frozenset[str]:
    """The versions a `maven-metadata.xml` lists (`metadata/versioning/versions/version`)."""
    parser = expat.ParserCreate()
    # What lets a small document expand (entities) or reach elsewhere (external ones): refused.
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    path: list[str] = []
    found: list[str] = []
    text: list[str] = []

    def start(tag: str, _: dict[str, str]) -> None:
        path.append(tag)
        text.clear()

    def end(tag: str) -> None:
        if path == ["metadata", "versioning", "versions", "version"]:
            found.append("".join(text).strip())
            if len(found) > MAX_VERSIONS:
                raise _Refused
        path.pop()

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    try:
        parser.Parse(body, True)
    except _Refused:
        raise MirrorGarbled(
            "maven-metadata.xml declares a DOCTYPE or an entity, or is too long"
        ) from None
    except expat.ExpatError as exc:
        raise MirrorGarbled(
            f"maven-metadata.xml is not XML: {expat.errors.messages[exc.code]}"
        ) from None
    if not found and b"<versioning" not in body:
        raise MirrorGarbled("maven-metadata.xml without versioning")
    return frozenset(version for version in found if version)


class Maven(Index):
    name = "maven"
    public = "Maven Central"
    public_hosts = frozenset({"repo1.maven.org", "repo.maven.apache.org", "central.sonatype.com"})
    identifier = _COORDINATES
    osv = "Maven"  # names `groupId:artifactId`, as identifiers are
    # A version starts with a digit: `LATEST` and `RELEASE` name the newest, and `[1.0,)` a range
    _exact = re.compile(r"[0-9][0-9A-Za-z._+-]*")
    _versions = "MavenVersion"  # Maven's ComparableVersion: 1.0-alpha < 1.0-rc1 < 1.0 < 1.0-sp

    def ask(self, check: Check) -> Ask:
        base = check.location.rstrip("/")
        return Ask(
            f"{base}/{quote(metadata_path(check.identifier))}", base + "/", "application/xml"
        )

    def versions(self, body: bytes, content_type: str, check: Check) -> frozenset[str]:
        return metadata_versions(body)

    def argv(self, identifier: str, version: str, base: str) -> list[str]:
        coordinates = f"{identifier}:{version}" if version else identifier
        return ["jbang", *(["--repos", f"mirror={base}"] if base else []), coordinates]


MAVEN = Maven()
