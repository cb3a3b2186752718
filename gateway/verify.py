"""Ask each mirror, through its standard read API, whether it can serve a package version.

npm packument, PyPI simple index (PEP 691 JSON, HTML fallback), NuGet v3 flat container (found
through index.json), cargo sparse index, OCI distribution `HEAD /v2/<repo>/manifests/<ref>`
(with the bearer-token challenge), and `HEAD` for mcpb URLs. One document answers every version
of a package where the API allows it. Results, misses included, are cached for `ttl`; a mirror
that is down or answers nonsense gives `unknown`, never `missing`. Only locations produced by
the configured mirror rules are ever checked.

Every request stays under the location it was built from (`locations.within`): a redirect is
followed only there (elsewhere: `unknown`), credentials go only to URLs under the prefix they
are configured for, and answers are read up to `verify.max_body` (a larger one: `unknown`).
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import orjson
import structlog
from packaging.version import InvalidVersion, Version
from yarl import URL

from gateway import registry_types
from gateway.bounded import read_body
from gateway.config import Credential, VerifySettings
from gateway.locations import origin, within
from gateway.mirrors import OciReference

log = structlog.get_logger("gateway.verify")

Result = Literal["available", "missing", "unknown"]
UNKNOWN_TTL = 60.0
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
OCI_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


@dataclass(frozen=True, slots=True)
class Check:
    """One question for a mirror: does `location` serve `identifier` at `version`?"""

    kind: str  # npm | pypi | nuget | cargo | oci | mcpb
    location: str  # index URL, OCI registry host, or the mcpb download URL
    identifier: str
    version: str


@dataclass(frozen=True, slots=True)
class Verdict:
    result: Result
    checked_at: datetime
    fresh: bool


def check_for(package: dict[str, Any]) -> Check | None:
    """The check for a package as served (after its rewrite)."""
    kind = package.get("registryType")
    identifier = package.get("identifier")
    if not isinstance(identifier, str):
        return None
    if kind in registry_types.INDEX:
        base, version = package.get("registryBaseUrl"), package.get("version")
        if isinstance(base, str) and isinstance(version, str):
            return Check(str(kind), base, identifier, version)
        return None
    if kind == "oci":
        reference = OciReference.parse(identifier)
        if reference is None or ("." not in reference.host and ":" not in reference.host):
            return None
        return Check("oci", reference.host, reference.repository, reference.reference)
    if kind == "mcpb" and identifier.startswith(("https://", "http://")):
        return Check("mcpb", identifier, identifier, "")
    return None


def _host(url: str) -> str:
    """Where a URL points, without any credentials, for messages."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _pep440(version: str) -> Version | None:
    try:
        return Version(version)
    except InvalidVersion:
        return None


def versions_match(kind: str, wanted: str, offered: str) -> bool:
    """Whether a mirror's version string is the version asked for, as that package tool sees it."""
    if kind == "pypi":
        # PEP 440 equality, as pip reads versions: 2.0.0-rc.1 is 2.0.0rc1, 1.1 is 1.1.0.
        mine, theirs = _pep440(wanted), _pep440(offered)
        return mine == theirs if mine is not None else wanted == offered
    if kind == "nuget":  # NuGet compares case-insensitively and ignores build metadata
        return wanted.split("+")[0].lower() == offered.split("+")[0].lower()
    return wanted == offered  # npm and cargo resolve exact versions exactly


def pypi_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self._in_a = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._in_a = True
            href = dict(attrs).get("href") or ""
            self.names.append(href.split("#")[0].rstrip("/").rsplit("/", 1)[-1])

    def handle_endtag(self, tag: str) -> None:
        self._in_a = False


def pypi_versions(name: str, filenames: Iterable[str]) -> set[str]:
    """Versions named by distribution files (wheels and sdists) of a project."""
    wanted = pypi_name(name)
    found = set()
    for filename in filenames:
        stem = filename
        if stem.endswith(".whl"):
            parts = stem[:-4].split("-")
            if len(parts) >= 5 and pypi_name(parts[0]) == wanted:
                found.add(parts[1])
            continue
        for ext in (".tar.gz", ".zip", ".tar.bz2", ".tgz"):
            if stem.endswith(ext):
                base = stem[: -len(ext)]
                project, _, version = base.rpartition("-")
                if project and pypi_name(project) == wanted:
                    found.add(version)
    return found


def cargo_index_path(name: str) -> str:
    lower = name.lower()
    if len(lower) <= 2:
        return f"{len(lower)}/{lower}"
    if len(lower) == 3:
        return f"3/{lower[0]}/{lower}"
    return f"{lower[:2]}/{lower[2:4]}/{lower}"


class MirrorUnavailable(Exception):
    """The mirror could not answer (down, 5xx, timeout, nonsense): the result is unknown."""


Document = frozenset[str] | bool | None  # versions; or found / not found; None = 404


class Verifier:
    """Checks with bounded concurrency and a cache shared by every view and snapshot."""

    def __init__(self, settings: VerifySettings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.session = session
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self._documents: dict[tuple[str, ...], tuple[Document | MirrorUnavailable, float]] = {}
        self._checked_at: dict[tuple[str, ...], datetime] = {}
        self._inflight: dict[tuple[str, ...], asyncio.Future[None]] = {}

    # -- pure lookups, for snapshot builds ---------------------------------------------------

    @staticmethod
    def _key(check: Check) -> tuple[str, ...]:
        if check.kind in ("oci", "mcpb"):
            return (check.kind, check.location, check.identifier, check.version)
        name = pypi_name(check.identifier) if check.kind == "pypi" else check.identifier
        if check.kind == "nuget":
            name = name.lower()
        return (check.kind, check.location, name)

    def lookup(self, check: Check) -> Verdict | None:
        key = self._key(check)
        cached = self._documents.get(key)
        if cached is None:
            return None
        document, expires = cached
        fresh = time.monotonic() < expires
        checked_at = self._checked_at[key]
        if isinstance(document, MirrorUnavailable):
            return Verdict("unknown", checked_at, fresh)
        if document is None or document is False:
            return Verdict("missing", checked_at, fresh)
        if document is True:
            return Verdict("available", checked_at, fresh)
        found = any(versions_match(check.kind, check.version, v) for v in document)
        return Verdict("available" if found else "missing", checked_at, fresh)

    # -- I/O -------------------------------------------------------------------------------

    async def run(self, checks: Iterable[Check]) -> int:
        """Fetch what is not cached or has expired; returns how many documents were fetched."""
        self._forget_unasked()
        todo: dict[tuple[str, ...], Check] = {}
        for check in checks:
            key = self._key(check)
            verdict = self.lookup(check)
            if verdict is None or not verdict.fresh:
                todo.setdefault(key, check)
        await asyncio.gather(*(self._fetch_once(key, check) for key, check in todo.items()))
        return len(todo)

    def _forget_unasked(self) -> None:
        """Drop results expired for a whole `ttl` more: no snapshot asked for them again (the
        packages left the catalog), so the cache holds only what the catalog needs."""
        cutoff = time.monotonic() - self.settings.ttl
        for key in [k for k, (_, expires) in self._documents.items() if expires < cutoff]:
            del self._documents[key]
            self._checked_at.pop(key, None)

    async def _fetch_once(self, key: tuple[str, ...], check: Check) -> None:
        pending = self._inflight.get(key)
        if pending is not None:
            await pending
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            async with self._semaphore:
                try:
                    document: Document | MirrorUnavailable = await self._fetch(check)
                    ttl = self.settings.ttl
                except MirrorUnavailable as exc:
                    document, ttl = exc, min(self.settings.ttl, UNKNOWN_TTL)
                    log.warning("mirror_check_failed", kind=check.kind, reason=str(exc))
            self._documents[key] = (document, time.monotonic() + ttl)
            self._checked_at[key] = datetime.now(UTC)
        finally:
            del self._inflight[key]
            future.set_result(None)

    def _credential(self, url: str) -> Credential | None:
        for credential in self.settings.credentials:
            if within(url, credential.prefix):
                return credential
        return None

    def _auth_headers(self, url: str) -> dict[str, str]:
        credential = self._credential(url)
        if credential is None:
            return {}
        headers = {k: v.get_secret_value() for k, v in credential.headers.items()}
        if credential.username is not None and "Authorization" not in headers:
            password = credential.password.get_secret_value() if credential.password else ""
            pair = f"{credential.username.get_secret_value()}:{password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return headers

    async def _request(
        self,
        method: str,
        url: str,
        under: str,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> tuple[int, bytes, Any]:
        """One request to a mirror, and the redirects it answers with, each only to a URL
        under `under` and with only the credentials configured for that URL."""
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        for _ in range(MAX_REDIRECTS + 1):
            if not within(url, under):
                raise MirrorUnavailable(f"{_host(url)}: outside the mirror's location")
            all_headers = {**(self._auth_headers(url) if auth else {}), **(headers or {})}
            try:
                async with self.session.request(
                    method, url, headers=all_headers, timeout=timeout, allow_redirects=False
                ) as response:
                    location = response.headers.get("Location")
                    if response.status in REDIRECTS and location:
                        url = str(response.url.join(URL(location)))
                        continue
                    body = await self._read(response) if method != "HEAD" else b""
                    return response.status, body, response.headers
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                raise MirrorUnavailable(f"{type(exc).__name__} from {_host(url)}") from None
        raise MirrorUnavailable(f"more than {MAX_REDIRECTS} redirects from {_host(url)}")

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        body = await read_body(response, self.settings.max_body)
        if body is None:
            cap = self.settings.max_body
            raise MirrorUnavailable(f"answer from {_host(str(response.url))} over {cap} bytes")
        return body

    async def _json(self, url: str, under: str, accept: str = "application/json") -> Any:
        status, body, _ = await self._request("GET", url, under, {"Accept": accept})
        if status in (404, 410):
            return None
        if status != 200:
            raise MirrorUnavailable(f"HTTP {status} from {_host(url)}")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise MirrorUnavailable(f"not JSON from {_host(url)}") from None

    async def _fetch(self, check: Check) -> Document:
        fetch = {
            "npm": self._npm,
            "pypi": self._pypi,
            "nuget": self._nuget,
            "cargo": self._cargo,
            "oci": self._oci,
            "mcpb": self._mcpb,
        }[check.kind]
        return await fetch(check)

    async def _npm(self, check: Check) -> Document:
        url = f"{check.location.rstrip('/')}/{quote(check.identifier, safe='@')}"
        accept = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8"
        document = await self._json(url, check.location, accept)
        if document is None:
            return None
        versions = document.get("versions") if isinstance(document, dict) else None
        if not isinstance(versions, dict):
            raise MirrorUnavailable("npm packument without versions")
        return frozenset(versions)

    async def _pypi(self, check: Check) -> Document:
        url = f"{check.location.rstrip('/')}/{quote(pypi_name(check.identifier))}/"
        accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
        status, body, headers = await self._request("GET", url, check.location, {"Accept": accept})
        if status in (404, 410):
            return None
        if status != 200:
            raise MirrorUnavailable(f"HTTP {status} from {_host(url)}")
        if "json" in headers.get("Content-Type", ""):
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise MirrorUnavailable("PEP 691 answer is not JSON") from None
            if isinstance(document.get("versions"), list):  # PEP 700
                return frozenset(str(v) for v in document["versions"])
            files = document.get("files") or []
            names = [f.get("filename", "") for f in files if isinstance(f, dict)]
            return frozenset(pypi_versions(check.identifier, names))
        parser = _Links()
        parser.feed(body.decode("utf-8", "replace"))
        return frozenset(pypi_versions(check.identifier, parser.names))

    async def _nuget(self, check: Check) -> Document:
        index = await self._json(check.location, check.location)
        resources = index.get("resources") if isinstance(index, dict) else None
        if not isinstance(resources, list):
            raise MirrorUnavailable("NuGet service index without resources")
        base = next(
            (
                r.get("@id")
                for r in resources
                if isinstance(r, dict) and str(r.get("@type", "")).startswith("PackageBaseAddress")
            ),
            None,
        )
        mirror = origin(check.location)  # the flat container may sit elsewhere on that host
        if not isinstance(base, str) or not within(base, mirror):
            raise MirrorUnavailable("NuGet service index without a usable PackageBaseAddress")
        lower = check.identifier.lower()
        document = await self._json(f"{base.rstrip('/')}/{quote(lower)}/index.json", mirror)
        if document is None:
            return None
        versions = document.get("versions") if isinstance(document, dict) else None
        if not isinstance(versions, list):
            raise MirrorUnavailable("NuGet flat container answer without versions")
        return frozenset(str(v) for v in versions)

    async def _cargo(self, check: Check) -> Document:
        base = check.location.removeprefix("sparse+").rstrip("/")
        url = f"{base}/{quote(cargo_index_path(check.identifier))}"
        status, body, _ = await self._request("GET", url, base + "/")
        if status in (404, 410):
            return None
        if status != 200:
            raise MirrorUnavailable(f"HTTP {status} from {_host(url)}")
        versions = set()
        for line in body.splitlines():
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise MirrorUnavailable("cargo index line is not JSON") from None
            if isinstance(record, dict) and not record.get("yanked"):
                versions.add(str(record.get("vers")))
        return frozenset(versions)

    def _registry_url(self, host: str) -> str:
        plain = host.startswith(("localhost", "127.", "[::1]"))  # as docker treats them
        return f"{'http' if plain else 'https'}://{host}"

    async def _oci(self, check: Check) -> Document:
        registry = self._registry_url(check.location)
        url = f"{registry}/v2/{check.identifier}/manifests/{quote(check.version, safe=':')}"
        under = f"{registry}/v2/"
        headers = {"Accept": OCI_ACCEPT}
        status, _, response_headers = await self._request("HEAD", url, under, headers, auth=False)
        if status == 401:
            token = await self._oci_token(response_headers.get("WWW-Authenticate", ""), registry)
            headers["Authorization"] = f"Bearer {token}"
            status, _, _ = await self._request("HEAD", url, under, headers, auth=False)
        if status == 200:
            return True
        if status == 404:
            return False
        raise MirrorUnavailable(f"HTTP {status} for an OCI manifest")

    async def _oci_token(self, challenge: str, registry: str) -> str:
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() != "bearer":
            raise MirrorUnavailable("OCI registry asks for an unsupported auth scheme")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        realm = fields.pop("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise MirrorUnavailable("OCI token challenge without a realm")
        # Follow a realm only to the registry itself or to a location credentials are
        # configured for; the credentials sent are the realm's own (by prefix), if any.
        if not within(realm, registry + "/") and self._credential(realm) is None:
            raise MirrorUnavailable("OCI token realm is on a host that is not configured")
        url = f"{realm.split('?')[0]}?{urlencode(fields)}"
        document = await self._json_with(url, realm.split("?")[0])
        token = document.get("token") or document.get("access_token")
        if not isinstance(token, str):
            raise MirrorUnavailable("OCI token service answered without a token")
        return token

    async def _json_with(self, url: str, under: str) -> Any:
        status, body, _ = await self._request("GET", url, under)
        if status != 200:
            raise MirrorUnavailable(f"HTTP {status} from the OCI token service")
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise MirrorUnavailable("OCI token service answer is not JSON") from None
        if not isinstance(document, dict):
            raise MirrorUnavailable("OCI token service answer is not an object")
        return document

    async def _mcpb(self, check: Check) -> Document:
        location = check.location
        status, _, _ = await self._request("HEAD", location, location)
        if status == 405:
            status, _, _ = await self._request("GET", location, location, {"Range": "bytes=0-0"})
        if status in (200, 206):
            return True
        if status in (404, 410):
            return False
        raise MirrorUnavailable(f"HTTP {status} for an mcpb file")
