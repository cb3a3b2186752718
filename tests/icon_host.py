"""An icon host for the icon tests: a real HTTPS server on 127.0.0.1 with a CA of its own, a
resolver that answers chosen names with chosen addresses, and small real images.

The gateway's fetcher speaks https only and connects to global addresses only; the tests reach
this loopback host through the fetcher's seams, never through the config: `permitted` (which
addresses it may connect to), `resolver` (what a name resolves to: here a fixed map, which can
also move port 443 to the host's real port) and `tls` (a context trusting this CA alone).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import ssl
import struct
import tempfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NAMES = ("icons.test", "other.test", "acme.example.com")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int = 4, height: int = 4, padding: int = 0) -> bytes:
    """A real grey PNG (a browser decodes it), `padding` bytes longer in a private chunk."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    extra = _chunk(b"prIv", b"\x00" * padding) if padding else b""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra
            + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))  # fmt: skip


WEBP = base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")  # 1x1, lossless
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\xff\xd9"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
HTML = b"<!doctype html><html><body><script>alert(1)</script></body></html>"


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def certificates(names: tuple[str, ...]) -> tuple[bytes, ssl.SSLContext]:
    """A fresh CA (its PEM) and a server context whose certificate it signed for `names`."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("icon test CA")).issuer_name(_name("icon test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    alternatives: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    alternatives.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    leaf = (
        x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert_pem = leaf.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with tempfile.TemporaryDirectory() as directory:  # load_cert_chain reads files only
        (Path(directory) / "cert.pem").write_bytes(cert_pem)
        (Path(directory) / "key.pem").write_bytes(key_pem)
        server.load_cert_chain(Path(directory) / "cert.pem", Path(directory) / "key.pem")
    return ca.public_bytes(serialization.Encoding.PEM), server


@dataclass
class Served:
    """What the host answers at one path."""

    body: bytes
    content_type: str = "image/png"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # before the answer
    drip: float = 0.0  # between chunks of 16 bytes


class MapResolver(AbstractResolver):
    """Answers each name from a fixed map: name -> (address, port or None to keep the URL's).
    A real resolver (aiohttp's interface), with answers the test chooses."""

    def __init__(self, names: dict[str, tuple[str, int | None]]) -> None:
        self.names = names
        self.asked: Counter[str] = Counter()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked[host] += 1
        if host not in self.names:
            raise OSError(f"{host}: no such name")
        address, moved = self.names[host]
        inet = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [{"hostname": host, "host": address, "port": moved or port, "family": inet,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}]  # fmt: skip

    async def close(self) -> None:
        return None


class IconHost:
    """An HTTPS server on 127.0.0.1 serving `files`; counts connections and requests."""

    def __init__(self) -> None:
        self.ca, self._context = certificates(NAMES)
        self.files: dict[str, Served] = {}
        self.hits: Counter[str] = Counter()
        self.seen: list[dict[str, str]] = []  # each request's headers
        self.connections = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    def client_tls(self) -> ssl.SSLContext:
        """A client context trusting this host's CA alone."""
        return ssl.create_default_context(cadata=self.ca.decode())

    def url(self, path: str, host: str = "icons.test") -> str:
        return f"https://{host}:{self.port}{path}"

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path_qs] += 1
        self.seen.append(dict(request.headers))
        served = self.files.get(request.path_qs) or self.files.get(request.path)
        if served is None:
            return web.Response(status=404)
        await asyncio.sleep(served.delay)
        headers = {"Content-Type": served.content_type, **served.headers}
        if not served.drip:
            return web.Response(status=served.status, body=served.body, headers=headers)
        response = web.StreamResponse(status=served.status, headers=headers)
        await response.prepare(request)
        for start in range(0, len(served.body), 16):
            await response.write(served.body[start : start + 16])
            await asyncio.sleep(served.drip)
        await response.write_eof()
        return response

    async def start(self) -> IconHost:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1
        )
        await self._runner.setup()
        factory = self._runner.server
        assert factory is not None

        def counted() -> Any:  # one call per accepted connection
            self.connections += 1
            return factory()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(counted, "127.0.0.1", 0, ssl=self._context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()  # no new connection; then the open ones are shut
        if self._runner is not None:
            await self._runner.cleanup()
        if self._server is not None:
            await self._server.wait_closed()
