"""Fake upstream registries: real aiohttp servers on 127.0.0.1, with knobs for failures."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from gateway.registries.cargo import index_path as cargo_index_path

OFFICIAL = "io.modelcontextprotocol.registry/official"
SCHEMA = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
MIRROR_TOKEN = "t0k3n"  # what FakeMirror's OCI token service hands out
MIRROR_USER, MIRROR_PASSWORD = "mirror-user", "mirror-pass"


def server_entry(
    name: str,
    version: str,
    *,
    published: str = "2026-01-01T00:00:00Z",
    updated: str | None = None,
    status: str = "active",
    packages: list[dict[str, Any]] | None = None,
    remotes: list[dict[str, Any]] | None = None,
    description: str = "A test server.",
    **extra: Any,
) -> dict[str, Any]:
    """A ServerResponse as the official registry sends it."""
    server: dict[str, Any] = {
        "$schema": SCHEMA,
        "name": name,
        "description": description,
        "version": version,
        **extra,
    }
    if packages is None and remotes is None:
        packages = [
            {
                "registryType": "npm",
                "identifier": f"@test/{name.split('/')[1]}",
                "version": version,
                "transport": {"type": "stdio"},
            }
        ]
    if packages is not None:
        server["packages"] = packages
    if remotes is not None:
        server["remotes"] = remotes
    return {
        "server": server,
        "_meta": {
            OFFICIAL: {
                "status": status,
                "publishedAt": published,
                "updatedAt": updated or published,
                "isLatest": False,
            }
        },
    }


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


@dataclass
class Failure:
    """One canned answer the fake gives instead of a page."""

    status: int = 503
    body: bytes = b'{"title":"Service Unavailable","status":503}'
    headers: dict[str, str] = field(default_factory=dict)
    stall: bool = False  # send half of a real page, then hang


class FakeRegistry:
    """An MCP registry list endpoint with the official server's paging, and failure knobs."""

    def __init__(self, entries: list[dict[str, Any]] | None = None, api: str = "v0.1") -> None:
        self.entries: dict[tuple[str, str], dict[str, Any]] = {}
        for entry in entries or []:
            self.put(entry)
        self.api = api
        self.failures: list[Failure] = []
        self.delay = 0.0
        self.requests: list[dict[str, str]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.url = ""
        self.vanish_after: int | None = None  # drop connections after this many requests
        self.raw_items: list[Any] = []  # served as they are, after the entries
        self._runner: web.AppRunner | None = None

    def put(self, entry: dict[str, Any]) -> None:
        server = entry["server"]
        self.entries[(server["name"], server["version"])] = entry

    def fail_next(self, count: int, failure: Failure | None = None) -> None:
        self.failures.extend([failure or Failure()] * count)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        self.requests.append(params)
        self.headers_seen.append(dict(request.headers))
        if self.vanish_after is not None and len(self.requests) > self.vanish_after:
            assert request.transport is not None
            request.transport.close()  # the upstream is gone: no answer at all
            return web.Response(status=500)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failures:
            failure = self.failures.pop(0)
            if failure.stall:
                return await self._stall(request)
            return web.Response(status=failure.status, body=failure.body, headers=failure.headers)
        limit = int(params.get("limit", "30"))
        since = _parse(params["updated_since"]) if "updated_since" in params else None
        include_deleted = params.get("include_deleted") == "true" or since is not None
        items: list[tuple[Any, Any]] = sorted(self.entries.items())
        if "cursor" in params:
            name, _, version = params["cursor"].partition(":")
            items = [(k, v) for k, v in items if k > (name, version)]
        selected: list[Any] = [] if "cursor" in params else list(self.raw_items)  # page 1 only
        for _, entry in items:
            meta = entry["_meta"][OFFICIAL]
            if meta["status"] == "deleted" and not include_deleted:
                continue
            if since is not None and _parse(meta["updatedAt"]) <= since:
                continue
            selected.append(entry)
            if len(selected) == limit:
                break
        metadata: dict[str, Any] = {"count": len(selected)}
        if len(selected) == limit and isinstance(selected[-1], dict) and "server" in selected[-1]:
            last = selected[-1]["server"]
            metadata["nextCursor"] = f"{last['name']}:{last['version']}"
        return web.Response(
            body=orjson.dumps({"servers": selected, "metadata": metadata}),
            content_type="application/json",
        )

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        body = orjson.dumps({"servers": list(self.entries.values()), "metadata": {"count": 1}})
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        await asyncio.sleep(2)  # past the client's timeout
        return response

    async def start(self) -> FakeRegistry:
        app = web.Application()
        app.router.add_get(f"/{self.api}/servers", self._list)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class FakeMirror:
    """One loopback server speaking npm, PyPI (PEP 691), NuGet v3, cargo sparse, GOPROXY,
    maven2, OCI and files."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.npm = {"@acme/weather": ["1.0.0", "1.2.0"]}
        self.pypi = {"acme-tools": ["acme_tools-1.0.0-py3-none-any.whl", "acme-tools-1.1.0.tar.gz"]}
        self.nuget = {"contoso.mcp": ["1.0.0", "2.0.0-beta"]}
        self.cargo = {"ripgrep-mcp": [("0.1.0", False), ("0.2.0", True)]}
        self.manifests = {("acme/weather", "1.2.0"), ("acme/weather", "sha256:" + "a" * 64)}
        # Module paths as the GOPROXY protocol spells them in URLs (capitals as !lower).
        self.go = {"github.com/!acme/weather-mcp": ["v1.0.0", "v1.2.0"]}
        self.maven = {"com/acme/weather-mcp": ["1.0.0", "1.2.0"]}  # group path/artifact
        self.maven_body: bytes | None = None  # served as every maven-metadata.xml when set
        self.files = {"notes-1.0.0.mcpb"}
        self.down = False
        self.url = ""
        self.npm_delay = 0.0
        self.npm_active = self.npm_peak = 0
        self.redirect: dict[str, str] = {}  # path -> Location answered with 302
        self.realm: str | None = None  # the OCI token service's URL (default: its own /token)
        self.npm_padding = 0  # bytes of padding in every packument
        self.npm_body: bytes | None = None  # served as every packument when set
        self.seen: list[tuple[str, dict[str, str]]] = []  # (path, headers) of every request

    def app(self) -> web.Application:
        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            self.hits[request.path] += 1
            self.seen.append((request.path, dict(request.headers)))
            if self.down:
                return web.Response(status=503)
            if request.path in self.redirect:
                return web.Response(status=302, headers={"Location": self.redirect[request.path]})
            response: web.StreamResponse = await handler(request)
            return response

        app = web.Application(middlewares=[count])
        app.router.add_get("/npm/{name:.*}", self.npm_packument)
        app.router.add_get("/pypi/simple/{name}/", self.pypi_project)
        app.router.add_get("/nuget/index.json", self.nuget_index)
        app.router.add_get("/nuget/flat/{id}/index.json", self.nuget_versions)
        app.router.add_get("/cargo/index/{path:.*}", self.cargo_index)
        app.router.add_get("/go/{module:.*}/@v/list", self.go_list)
        app.router.add_get("/maven/{path:.*}/maven-metadata.xml", self.maven_metadata)
        app.router.add_route("HEAD", "/v2/{repo:.*}/manifests/{ref}", self.oci_manifest)
        app.router.add_get("/token", self.oci_token)
        app.router.add_route("*", "/files/{name}", self.file)
        return app

    async def npm_packument(self, request: web.Request) -> web.Response:
        self.npm_active += 1
        self.npm_peak = max(self.npm_peak, self.npm_active)
        try:
            await asyncio.sleep(self.npm_delay)
        finally:
            self.npm_active -= 1
        if self.npm_body is not None:
            return web.Response(body=self.npm_body, content_type="application/json")
        versions = self.npm.get(request.match_info["name"])
        if versions is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(
            {"name": request.match_info["name"], "versions": {v: {} for v in versions},
             "readme": "x" * self.npm_padding}
        )  # fmt: skip

    async def pypi_project(self, request: web.Request) -> web.Response:
        files = self.pypi.get(request.match_info["name"])
        if files is None:
            return web.Response(status=404)
        body = {"meta": {"api-version": "1.0"}, "files": [{"filename": f} for f in files]}
        return web.Response(
            body=orjson.dumps(body), content_type="application/vnd.pypi.simple.v1+json"
        )

    async def nuget_index(self, request: web.Request) -> web.Response:
        resources = [{"@id": f"{self.url}/nuget/flat/", "@type": "PackageBaseAddress/3.0.0"}]
        return web.json_response({"version": "3.0.0", "resources": resources})

    async def nuget_versions(self, request: web.Request) -> web.Response:
        versions = self.nuget.get(request.match_info["id"])
        if versions is None:
            return web.Response(status=404)
        return web.json_response({"versions": versions})

    async def cargo_index(self, request: web.Request) -> web.Response:
        for name, versions in self.cargo.items():
            if request.match_info["path"] == cargo_index_path(name):
                lines = [orjson.dumps({"name": name, "vers": v, "yanked": y}) for v, y in versions]
                return web.Response(body=b"\n".join(lines))
        return web.Response(status=404)

    async def go_list(self, request: web.Request) -> web.Response:
        # The raw path: the proxy protocol's escaping is what is checked, not its decoding.
        module = request.raw_path.removeprefix("/go/").removesuffix("/@v/list")
        versions = self.go.get(module)
        if versions is None:
            return web.Response(status=404, text="not found")
        return web.Response(text="".join(f"{v}\n" for v in versions))

    async def maven_metadata(self, request: web.Request) -> web.Response:
        if self.maven_body is not None:
            return web.Response(body=self.maven_body, content_type="application/xml")
        path = request.match_info["path"]
        versions = self.maven.get(path)
        if versions is None:
            return web.Response(status=404)
        group, _, artifact = path.rpartition("/")
        listed = "".join(f"<version>{v}</version>" for v in versions)
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><metadata><groupId>{group.replace("/", ".")}'
            f"</groupId><artifactId>{artifact}</artifactId><versioning><latest>{versions[-1]}"
            f"</latest><versions>{listed}</versions></versioning></metadata>"
        )
        return web.Response(text=body, content_type="application/xml")

    async def oci_manifest(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {MIRROR_TOKEN}":
            challenge = (
                f'Bearer realm="{self.realm or self.url + "/token"}",service="fake-registry",'
                f'scope="repository:{request.match_info["repo"]}:pull"'
            )
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        found = (request.match_info["repo"], request.match_info["ref"]) in self.manifests
        return web.Response(status=200 if found else 404)

    async def oci_token(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{MIRROR_USER}:{MIRROR_PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401)
        assert request.query["scope"].startswith("repository:")
        return web.json_response({"token": MIRROR_TOKEN})

    async def file(self, request: web.Request) -> web.Response:
        if request.method == "HEAD" and request.match_info["name"].startswith("nohead-"):
            return web.Response(status=405)
        name = request.match_info["name"].removeprefix("nohead-")
        if name not in self.files:
            return web.Response(status=404)
        return web.Response(status=206 if "Range" in request.headers else 200, body=b"x")


class Witness:
    """A loopback server that answers every request with `answer` and records what it was
    sent: the host a mirror must never send the gateway (or its credentials) to."""

    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        self.answer = answer or {"token": "stolen"}
        self.seen: list[tuple[str, dict[str, str]]] = []  # (path, headers)
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _any(self, request: web.Request) -> web.Response:
        self.seen.append((request.path_qs, dict(request.headers)))
        return web.json_response(self.answer)

    async def start(self) -> Witness:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
