"""A following worker of `serve --workers N` (see `sharing`) hands what only the building
worker knows to it: the operator endpoints (status, explain, audit, syncs, reloads) and the
pages made of them (a server's accounts, the operators' page), and, until it serves a catalog
of its own, every request but its own liveness and metrics, over that worker's Unix socket
in the run's private directory. The answer comes back as the building worker gave it.

Only to the building worker: the socket is the one the run made. (Registry requests, never
MCP traffic: the gateway carries none.)
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.errors import LeaderUnavailable

log = structlog.get_logger("gateway.forwarding")

TIMEOUT = 60.0  # seconds: an account of a server is worked out in a thread, one at a time
MAX_ANSWER = 64 << 20  # bytes of an answer (the audit and the operators' page are the largest)
# Hop-by-hop headers (RFC 9110 7.6.1), and what aiohttp works out again for the answer. The
# client's Host goes along: pages name the gateway's URL by it.
_NOT_FORWARDED = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "content-length", "date", "server",
})  # fmt: skip


# The request's id as this worker logs it: the building worker's line for it carries the same.
REQUEST_ID = web.RequestKey("request_id", str)


class Forwarder:
    """Hands requests to the building worker's socket, one connection pool for all."""

    def __init__(self, socket: Path) -> None:
        self._socket = socket
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self._socket)),
                auto_decompress=False,  # its Content-Encoding goes back with its bytes
                timeout=aiohttp.ClientTimeout(total=TIMEOUT),
            )
        return self._session

    async def forward(self, request: web.BaseRequest) -> web.Response:
        headers = _kept(request.headers)
        if REQUEST_ID in request:
            headers["X-Request-Id"] = request[REQUEST_ID]
        body = await request.read() if request.can_read_body else None
        try:
            async with self._client().request(
                # As received, byte for byte: never normalized (`%2e%2e` is not `..` here).
                request.method, URL(f"http://leader{request.raw_path}", encoded=True),
                headers=headers, data=body, allow_redirects=False,
            ) as answer:  # fmt: skip
                # To its end: `read(n)` returns what has come so far (an answer in parts
                # would be handed on cut short, with its ETag). One cut short is an error.
                chunks, size = [], 0
                async for chunk in answer.content.iter_any():
                    size += len(chunk)
                    if size > MAX_ANSWER:
                        raise LeaderUnavailable()
                    chunks.append(chunk)
                data = b"".join(chunks)
                kept = _kept(answer.headers)
                if request.method == "HEAD" and "Content-Length" in answer.headers:
                    kept["Content-Length"] = answer.headers["Content-Length"]  # as GET's body
                    return web.Response(status=answer.status, headers=kept)
                return web.Response(status=answer.status, body=data, headers=kept)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("leader_unavailable", error=str(exc) or type(exc).__name__)
            raise LeaderUnavailable() from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _kept(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in _NOT_FORWARDED:
            kept.add(name, value)
    return kept
