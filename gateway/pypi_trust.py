"""PyPI's PEP 740 provenance, read at the mirror each view installs from (see `collecting` for
what every ecosystem shares), kept for trust.yaml's `pypi.ttl`.

The document is the project's simple page the mirror check reads (PEP 691 JSON; an HTML page
names no provenance). Each of the version's files is asked for: its provenance object is
fetched from the URL the index gives when that is under the mirror or under a location
trust.yaml names (`pypi.provenance_sources`), and verified for the sha256 the **mirror**
serves. A version's provenance is the worst of its files': one file the mirror serves without
verified provenance is what `uvx` may pick.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from gateway.collecting import Collector, Part, Read
from gateway.errors import MirrorUnavailable
from gateway.registries.base import Check
from gateway.registries.pypi import PYPI
from gateway.signals import Provenance, PypiFile, Signals
from gateway.trust_config import PypiSigning

if TYPE_CHECKING:
    from gateway.verify import Verifier

ACCEPT = "application/vnd.pypi.integrity.v1+json, application/json;q=0.5"
_FILES = 32  # files of one version asked for; a version with more: the rest `unknown`


class PypiSignals(Collector):
    """PyPI's signals of each (mirror, project, version) (see the module)."""

    def __init__(self, settings: PypiSigning, verifier: Verifier) -> None:
        super().__init__(verifier, settings.ttl, False, True,
                         bundle_bytes=settings.max_bundle * _FILES)  # fmt: skip
        self.settings = settings
        self._sources = [str(url) for url in settings.provenance_sources]

    async def read(self, check: Check, document: object, now: datetime) -> Signals | Read:
        files = _files_of(document, check.version)
        if not files:
            return self.absent(check, now)
        parts = [await self._job(check, file) for file in files[:_FILES]]
        if len(files) > _FILES:
            parts.append(Provenance("unknown", f"more than {_FILES} files for one version"))
        digests = tuple(f"sha256:{f.sha256}" for f in files if f.sha256 is not None)
        return Read(_digest(files), (), tuple(parts), digests=digests)

    async def _job(self, check: Check, file: PypiFile) -> Part:
        """A file's provenance job for the helper, or its answer when none is needed."""
        name = file.filename
        if file.sha256 is None:  # PEP 691 asks for one: the mirror answers nonsense
            return Provenance("unknown", f"{name}: the mirror gives no sha256 to bind it to")
        if file.provenance is None:
            return Provenance("absent", f"{name}: the mirror's index lists no provenance")
        try:
            url = urljoin(PYPI.ask(check).url, file.provenance)  # relative: to the project page
            under = self.allowed(url, check, self._sources)
        except ValueError:
            return Provenance(
                "unknown", f"{name}: the mirror gives a provenance URL that is not one"
            )
        if under is None:
            why = f"{name}: its provenance is at a location trust.yaml does not name"
            return Provenance("present", why)
        answer = await self.fetch(url, under, ACCEPT, self.settings.max_bundle)
        if isinstance(answer, MirrorUnavailable):
            return Provenance("unknown", f"{name}: provenance: {answer}")
        status, body = answer
        if status in (404, 410):
            why = f"{name}: provenance is listed, but its source does not serve it"
            return Provenance("present", why)
        if status != 200:
            return Provenance("unknown", f"{name}: provenance: HTTP {status}")
        return ("pypi", body, name, file.sha256, self.settings.trusted_root,
                tuple(str(issuer) for issuer in self.settings.issuers))  # fmt: skip


def _files_of(document: object, version: str) -> list[PypiFile]:
    """The files the mirror serves for a version (PEP 440 equality, as the check takes it);
    yanked ones are left out (installers skip them)."""
    if not isinstance(document, dict):
        return []
    files: list[PypiFile] = []
    for spelled, found in document.items():
        if isinstance(found, tuple) and PYPI.same_version(version, spelled):
            files.extend(f for f in found if isinstance(f, PypiFile) and not f.yanked)
    return files


def _digest(files: list[PypiFile]) -> str | None:
    """The digests provenance was checked against, as the served `_meta` says them."""
    known = [f"{f.filename} sha256:{f.sha256}" for f in files if f.sha256 is not None]
    return ", ".join(known[:_FILES]) or None
