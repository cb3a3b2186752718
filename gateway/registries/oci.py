"""OCI images: a reference in `identifier` (`ghcr.io/acme/tool:1.2.0`, or the 2025-09 form
with the registry in `registryBaseUrl`).

Mirrored by registry host (`docker.io` -> `registry.example.com/dockerhub`, written into the
identifier); a mirror is asked `HEAD /v2/<repository>/manifests/<reference>` (the shell does
the bearer-token dance). `docker run <mirror reference>` runs it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.registries.base import Check, Ecosystem, Package, Rewritten, location_of, unchanged

DOCKER_HUB = "docker.io"
_DOCKER_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_PATH = re.compile(r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*")
ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def canonical_host(host: str) -> str:
    return DOCKER_HUB if host in _DOCKER_ALIASES else host


@dataclass(frozen=True, slots=True)
class OciReference:
    """An image reference split into registry host, repository path, and `:tag` / `@digest`."""

    host: str
    repository: str
    suffix: str  # ":1.2.0", "@sha256:...", or "" (docker's implied :latest)

    @classmethod
    def parse(cls, identifier: str) -> OciReference | None:
        first, slash, rest = identifier.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            host, path = first, rest
        else:
            host, path = DOCKER_HUB, identifier
        host = canonical_host(host)
        digest_at = path.find("@")
        if digest_at >= 0:
            repository, suffix = path[:digest_at], path[digest_at:]
        else:
            colon = path.rfind(":")
            repository, suffix = (path[:colon], path[colon:]) if colon > 0 else (path, "")
        if host == DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"  # official images, as every Hub proxy expects
        if not _PATH.fullmatch(repository):
            return None
        return cls(host, repository, suffix)

    @property
    def reference(self) -> str:
        """The tag or digest a registry resolves (`latest` when none is given)."""
        return self.suffix[1:] if self.suffix else "latest"


def pinned(package: Package) -> str:
    """The image reference, registry included, pinned to the package's version when it names
    no tag (the 2025-09 form keeps the registry in `registryBaseUrl`)."""
    identifier = str(package.get("identifier", ""))
    base = package.get("registryBaseUrl")
    if isinstance(base, str) and base:
        identifier = f"{urlsplit(base).netloc or base}/{identifier}"
    version = package.get("version")
    last = identifier.rpartition("/")[2]
    if version and ":" not in last and "@" not in last:
        identifier += f":{version}"
    return identifier


class Oci(Ecosystem):
    name = "oci"
    public = "Docker Hub"
    public_hosts = frozenset(_DOCKER_ALIASES)
    identifier = re.compile(
        r"([a-z0-9][a-z0-9.-]*(:[0-9]+)?/)?[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*"
        r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?"
    )

    def rewrite(self, package: Package, identifier: str, hosts: dict[str, str]) -> Rewritten:
        """The reference under the mirror's prefix for its registry host, if one is set."""
        candidate = identifier
        base = package.get("registryBaseUrl")
        if isinstance(base, str) and base:  # the 2025-09 form: registry in registryBaseUrl
            candidate = pinned(package)
        reference = OciReference.parse(candidate)
        if reference is None or reference.host not in hosts:
            return unchanged(package)
        target = f"{hosts[reference.host]}/{reference.repository}{reference.suffix}"
        rewritten = {k: v for k, v in package.items() if k != "registryBaseUrl"}
        rewritten["identifier"] = target
        keys = (
            ("identifier", "registryBaseUrl") if "registryBaseUrl" in package else ("identifier",)
        )
        return Rewritten(rewritten, location_of(package, *keys), mirrored=True)

    def check(self, package: Package) -> Check | None:
        identifier = package.get("identifier")
        reference = OciReference.parse(identifier) if isinstance(identifier, str) else None
        if reference is None or ("." not in reference.host and ":" not in reference.host):
            return None
        return Check(self.name, reference.host, reference.repository, reference.reference)

    def command(self, package: Package) -> str | None:
        return super().command({**package, "identifier": pinned(package), "registryBaseUrl": ""})

    def argv(self, identifier: str, version: str, base: str) -> list[str]:
        return ["docker", "run", "-i", "--rm", identifier]


OCI = Oci()
