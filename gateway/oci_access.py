"""Requests to an OCI distribution registry (a mirror) under `/v2/`, with the bearer-token
challenge answered: the mirror check's `HEAD` of a manifest, and the trust signals' reads of
referrers and tags.

A token realm is followed only to the registry itself or to a location credentials are
configured for (`mirrors.yaml` `verify.credentials`), and gets only that location's own
credentials; the registry gets none but the token.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from gateway import isolated
from gateway.errors import MirrorUnavailable
from gateway.locations import within
from gateway.registries.oci import ACCEPT

if TYPE_CHECKING:
    from gateway.verify import Verifier


def registry_url(host: str) -> str:
    """A registry host as a base URL: plain http for loopback, as docker treats it."""
    plain = host.startswith(("localhost", "127.", "[::1]"))
    return f"{'http' if plain else 'https'}://{host}"


class OciAccess:
    """One registry's `/v2/` API, a token fetched when it challenges (and kept for the rest
    of this access's requests)."""

    def __init__(self, verifier: Verifier, host: str) -> None:
        self.verifier = verifier
        self.registry = registry_url(host)
        self._token: str | None = None

    async def request(
        self, method: str, path: str, accept: str = ACCEPT, limit: int | None = None
    ) -> tuple[int, bytes, Any]:
        """(status, body, headers) of `method` on a path under `/v2/`."""
        url = f"{self.registry}{path}"
        under = f"{self.registry}/v2/"
        headers = {"Accept": accept}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        request = self.verifier.request
        status, body, answer = await request(method, url, under, headers, False, limit)
        if status == 401 and self._token is None:
            self._token = await self._token_for(answer.get("WWW-Authenticate", ""))
            headers["Authorization"] = f"Bearer {self._token}"
            status, body, answer = await request(method, url, under, headers, False, limit)
        return status, body, answer

    async def _token_for(self, challenge: str) -> str:
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() != "bearer":
            raise MirrorUnavailable("OCI registry asks for an unsupported auth scheme")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        realm = fields.pop("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise MirrorUnavailable("OCI token challenge without a realm")
        # Follow a realm only to the registry itself or to a location credentials are
        # configured for; the credentials sent are the realm's own (by prefix), if any.
        if not within(realm, self.registry + "/") and not self.verifier.credential_for(realm):
            raise MirrorUnavailable("OCI token realm is on a host that is not configured")
        base = realm.split("?")[0]
        status, body, _ = await self.verifier.request("GET", f"{base}?{urlencode(fields)}", base)
        if status != 200:
            raise MirrorUnavailable(f"HTTP {status} from the OCI token service")
        outcome: tuple[str] | None = await isolated.parse(isolated.json_then, body, _token_of)
        if outcome is None:
            raise MirrorUnavailable("OCI token service answer is not JSON")
        return outcome[0]


def _token_of(document: object) -> str:
    """The token in an OCI token service's answer."""
    if not isinstance(document, dict):
        raise MirrorUnavailable("OCI token service answer is not an object")
    token = document.get("token") or document.get("access_token")
    if not isinstance(token, str):
        raise MirrorUnavailable("OCI token service answered without a token")
    return token
