"""Ask each mirror, through its standard read API, whether it can serve a package version: the
HTTP part. What to ask and how to read the answer is each ecosystem's (`gateway.registries`).

npm packument, PyPI simple index (PEP 691 JSON, HTML fallback), NuGet v3 flat container (found
through index.json), cargo sparse index, GOPROXY `@v/list`, maven2 `maven-metadata.xml`, OCI
distribution `HEAD /v2/<repo>/manifests/<ref>` (with the bearer-token challenge), and `HEAD`
for mcpb URLs. One document answers every version of a package where the API allows it.
Results, misses included, are cached for `ttl`; a mirror that is down or answers nonsense
gives `unknown`, never `missing`. Only locations produced by
the configured mirror rules are ever checked.

Every request stays under the location it was built from (`locations.within`): a redirect is
followed only there (elsewhere: `unknown`), credentials go only to URLs under the prefix they
are configured for, and answers are read up to `verify.max_body` (a larger one: `unknown`).
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
import structlog

from gateway import isolated
from gateway.bounded import read_body
from gateway.collecting import UNKNOWN_TTL, Collector
from gateway.config import Credential, VerifySettings
from gateway.errors import MirrorGarbled, MirrorUnavailable, RedirectRefused
from gateway.fetching import confined
from gateway.locations import origin, within
from gateway.mcpb_trust import McpbSignals
from gateway.npm_trust import NpmSignals
from gateway.oci_access import OciAccess
from gateway.oci_trust import OciSignals
from gateway.pypi_trust import PypiSignals
from gateway.registries import ECOSYSTEMS, INDEXES
from gateway.registries.base import Ask, Check, Result, Verdict
from gateway.registries.npm import NPM
from gateway.registries.nuget import NUGET
from gateway.registries.pypi import PYPI
from gateway.signals import Dist, PypiFile
from gateway.trust_config import NpmSigning, OciSigning, PypiSigning, TrustSettings

log = structlog.get_logger("gateway.verify")


def _host(url: str) -> str:
    """Where a URL points, without any credentials, for messages."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


# versions (with signals: each npm version's dist facts, each PyPI version's files); or
# found / not found; None = 404
Document = frozenset[str] | dict[str, Dist] | dict[str, tuple[PypiFile, ...]] | bool | None
# trust.yaml's signal sources: npm, PyPI, OCI, the mcpb digest join (with its bound), and
# whether scan receipts are read (then npm documents are read for their digests alone)
Sources = tuple[NpmSigning | None, PypiSigning | None, OciSigning | None, int | None, bool]
T = TypeVar("T")


class Verifier:
    """Checks with bounded concurrency and a cache shared by every view and snapshot."""

    def __init__(
        self,
        settings: VerifySettings,
        session: aiohttp.ClientSession,
        trust: TrustSettings | None = None,
    ) -> None:
        self.settings = settings
        self.session = session
        npm, pypi, oci, _, scan = self.sources = sources(trust)
        self.collectors: dict[str, Collector] = {}  # by package type: what collects signals
        if npm is not None and (npm.signatures or npm.provenance or scan):
            self.collectors["npm"] = NpmSignals(npm, self)
        if pypi is not None:
            self.collectors["pypi"] = PypiSignals(pypi, self)
        if oci is not None:
            self.collectors["oci"] = OciSignals(oci, self)
        if trust is not None and trust.mcpb:
            self.collectors["mcpb"] = McpbSignals(trust, self)
        self.semaphore = asyncio.Semaphore(settings.concurrency)
        self._documents: dict[tuple[str, ...], tuple[Document | MirrorUnavailable, float]] = {}
        self._checked_at: dict[tuple[str, ...], datetime] = {}
        self._inflight: dict[tuple[str, ...], asyncio.Future[None]] = {}
        self.changes = 0  # answers stored or forgotten (see `generation`)
        # the earliest time an unknown answer may be asked again (the refresher then rebuilds,
        # and what is still pending is asked): an outage that ends is noticed within a minute
        self.unknown_until = math.inf
        self._due_at = time.monotonic()

    # -- pure lookups, for snapshot builds ---------------------------------------------------

    @staticmethod
    def _key(check: Check) -> tuple[str, ...]:
        index = INDEXES.get(check.kind)
        if index is None:  # oci, mcpb: one answer per version
            return (check.kind, check.location, check.identifier, check.version)
        return (check.kind, check.location, index.cache_name(check.identifier))

    def lookup(self, check: Check) -> Verdict | None:
        key = self._key(check)
        cached = self._documents.get(key)
        if cached is None:
            return None
        document, expires = cached
        fresh = time.monotonic() < expires
        checked_at = self._checked_at[key]
        result: Result
        if isinstance(document, MirrorUnavailable):
            result = "unknown"
        elif document is None or document is False:
            result = "missing"
        elif document is True:
            result = "available"
        else:
            ecosystem = ECOSYSTEMS[check.kind]
            found = any(ecosystem.same_version(check.version, v) for v in document)
            result = "available" if found else "missing"
        collector = self.collectors.get(check.kind)
        if collector is not None:
            known = collector.lookup(check)
            if known is None:  # the document is known, its signals not yet
                return Verdict(result, checked_at, False)
            signals, signals_until = known
            until = min(expires, signals_until)
            return Verdict(result, checked_at, time.monotonic() < until, signals, until)
        return Verdict(result, checked_at, fresh, None, expires)

    @property
    def ttl(self) -> float:
        return min([self.settings.ttl, *(c.ttl for c in self.collectors.values())])

    @property
    def tick(self) -> float:
        """How often `due` is worth asking."""
        return min(self.ttl, UNKNOWN_TTL)

    def due(self) -> bool:
        """Whether answers may have aged out since it last said so: every `ttl` (the mirror
        checks', or the signals' if shorter), and once an unknown answer's minute is up,
        so that an outage that ends is noticed within a minute or so."""
        now = time.monotonic()
        if now - self._due_at >= self.ttl or now >= self.unknown_until:
            self._due_at, self.unknown_until = now, math.inf
            return True
        return False

    def __call__(self, check: Check) -> Verdict | None:
        """A build's lookup (`lookup`), with a `generation` that says when answers changed."""
        return self.lookup(check)

    @property
    def generation(self) -> int:
        """Changes whenever an answer is stored or forgotten: what was read from the answers
        holds while it is the same (and they are fresh: see `Verdict.until`)."""
        return self.changes

    # -- I/O -------------------------------------------------------------------------------

    async def run(self, checks: Iterable[Check]) -> int:
        """Fetch what is not cached or has expired; returns how many documents were fetched."""
        self._forget_unasked()
        todo: dict[tuple[str, ...], Check] = {}
        signing: dict[str, list[Check]] = {}  # by package type
        for check in checks:
            key = self._key(check)
            cached = self._documents.get(key)
            if cached is None or time.monotonic() >= cached[1]:
                todo.setdefault(key, check)
            collector = self.collectors.get(check.kind)
            # a document read again: its signals too
            if collector is not None and (key in todo or collector.stale(check)):
                signing.setdefault(check.kind, []).append(check)
        await asyncio.gather(*(self._fetch_once(key, check) for key, check in todo.items()))
        for kind, asked in signing.items():
            documents = {check: self._documents[self._key(check)][0] for check in asked}
            await self.collectors[kind].collect(list(dict.fromkeys(asked)), documents)
        return len(todo) + sum(len(asked) for asked in signing.values())

    def _forget_unasked(self) -> None:
        """Drop results expired for a whole `ttl` more: no snapshot asked for them again (the
        packages left the catalog), so the cache holds only what the catalog needs."""
        cutoff = time.monotonic() - self.settings.ttl
        for key in [k for k, (_, expires) in self._documents.items() if expires < cutoff]:
            del self._documents[key]
            self._checked_at.pop(key, None)
            self.changes += 1
        for collector in self.collectors.values():
            collector.forget_unasked()

    async def _fetch_once(self, key: tuple[str, ...], check: Check) -> None:
        pending = self._inflight.get(key)
        if pending is not None:
            await pending
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            async with self.semaphore:
                try:
                    document: Document | MirrorUnavailable = await self._fetch(check)
                    ttl = self.settings.ttl
                except MirrorUnavailable as exc:
                    document, ttl = exc, min(self.settings.ttl, UNKNOWN_TTL)
                    self.unknown_until = min(self.unknown_until, time.monotonic() + ttl)
                    log.warning("mirror_check_failed", kind=check.kind, reason=str(exc))
            self._documents[key] = (document, time.monotonic() + ttl)
            self._checked_at[key] = datetime.now(UTC)
            self.changes += 1
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

    async def request(
        self,
        method: str,
        url: str,
        under: str,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        limit: int | None = None,
    ) -> tuple[int, bytes, Any]:
        """One request to a mirror, and the redirects it answers with, each only to a URL
        under `under` and with only the credentials configured for that URL."""

        async def read(response: aiohttp.ClientResponse) -> bytes:
            return await self._read(response, limit) if method != "HEAD" else b""

        return await self.stream(method, url, under, read, headers, auth)

    async def stream(
        self,
        method: str,
        url: str,
        under: str,
        read: Callable[[aiohttp.ClientResponse], Awaitable[T]],
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> tuple[int, T, Any]:
        """`request` with what `read` makes of the answer (it may stream it)."""
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)

        def headers_for(at: str) -> dict[str, str]:
            return {**(self._auth_headers(at) if auth else {}), **(headers or {})}

        try:
            return await confined(self.session, method, url, under, headers_for, timeout, read)
        except RedirectRefused as exc:
            if exc.why.startswith("more than"):
                raise MirrorUnavailable(f"{exc.why} from {exc.host}") from None
            raise MirrorUnavailable(f"{exc.host}: outside the mirror's location") from None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise MirrorUnavailable(f"{type(exc).__name__} from {_host(url)}") from None

    async def _read(self, response: aiohttp.ClientResponse, limit: int | None = None) -> bytes:
        cap = limit or self.settings.max_body
        body = await read_body(response, cap)
        if body is None:
            raise MirrorUnavailable(f"answer from {_host(str(response.url))} over {cap} bytes")
        return body

    async def json(self, url: str, under: str, extract: Callable[[Any], T]) -> T | None:
        """`extract` of a JSON answer (None for a 404 or 410), parsed off the serving loop."""
        status, body, _ = await self.request("GET", url, under, {"Accept": "application/json"})
        if status in (404, 410):
            return None
        if status != 200:
            raise MirrorUnavailable(f"HTTP {status} from {_host(url)}")
        outcome: tuple[T] | None = await isolated.parse(isolated.json_then, body, extract)
        if outcome is None:
            raise MirrorUnavailable(f"not JSON from {_host(url)}")
        return outcome[0]

    async def _fetch(self, check: Check) -> Document:
        if check.kind == "nuget":
            return await self._nuget(check)
        if check.kind == "oci":
            return await self._oci(check)
        if check.kind == "mcpb":
            return await self._mcpb(check)
        index = INDEXES[check.kind]
        signed = check.kind in self.collectors
        ask = NPM.full(check) if signed and index is NPM else index.ask(check)
        status, body, headers = await self._ask(ask)
        if status in (404, 410):
            return None
        if status != 200:
            raise MirrorUnavailable(f"HTTP {status} from {_host(ask.url)}")
        read: Callable[[bytes, str, Check], Document] = index.versions
        if signed:  # each version's dist facts, or files
            read = NPM.dists if index is NPM else PYPI.distributions
        return await isolated.parse(read, body, headers.get("Content-Type", ""), check)

    async def _ask(self, ask: Ask) -> tuple[int, bytes, Any]:
        return await self.request("GET", ask.url, ask.under, {"Accept": ask.accept})

    async def _nuget(self, check: Check) -> Document:
        first = NUGET.service_index(check)
        flat = await self.json(first.url, first.under, NUGET.flat_container)
        if flat is None:
            raise MirrorGarbled("NuGet service index without resources")
        mirror = origin(check.location)  # the flat container may sit elsewhere on that host
        if not within(flat, mirror):
            raise MirrorUnavailable("NuGet service index without a usable PackageBaseAddress")
        return await self.json(NUGET.ask_in(flat, check), mirror, NUGET.listed)

    async def _oci(self, check: Check) -> Document:
        url = f"/v2/{check.identifier}/manifests/{quote(check.version, safe=':')}"
        status, _, _ = await OciAccess(self, check.location).request("HEAD", url)
        if status == 200:
            return True
        if status == 404:
            return False
        raise MirrorUnavailable(f"HTTP {status} for an OCI manifest")

    def credential_for(self, url: str) -> bool:
        """Whether credentials are configured for a URL (an OCI token realm elsewhere)."""
        return self._credential(url) is not None

    async def _mcpb(self, check: Check) -> Document:
        location = check.location
        status, _, _ = await self.request("HEAD", location, location)
        if status == 405:
            status, _, _ = await self.request("GET", location, location, {"Range": "bytes=0-0"})
        if status in (200, 206):
            return True
        if status in (404, 410):
            return False
        raise MirrorUnavailable(f"HTTP {status} for an mcpb file")


def sources(trust: TrustSettings | None) -> Sources:
    """trust.yaml's signal sources: a verifier made for others is made again."""
    if trust is None:
        return (None, None, None, None, False)
    mcpb = trust.max_mcpb_bytes if trust.mcpb else None
    return (trust.npm, trust.pypi, trust.oci, mcpb, trust.scan_receipts)


async def answers(
    settings: VerifySettings, trust: TrustSettings | None, checks: Iterable[Check], deadline: float
) -> Callable[[Check], Verdict | None]:
    """Ask the mirrors once (for the command line): what they answered within `deadline`
    seconds; what they did not is unknown. A hostile answer still being parsed is abandoned."""
    headers = {"User-Agent": "mcp-discovery-gateway"}
    async with aiohttp.ClientSession(headers=headers) as session:
        verifier = Verifier(settings, session, trust)
        try:
            async with asyncio.timeout(deadline if deadline < math.inf else None):
                await verifier.run(checks)
        except TimeoutError:
            pass
    isolated.shutdown()
    return verifier.lookup
