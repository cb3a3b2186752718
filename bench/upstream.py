"""A fast fake upstream registry for the ingest benchmark: pages pre-sorted, cursor = offset.

Run: python -m bench.upstream FILE PORT. `POST /mutate?fraction=0.01` updates that share of
entries (a new version of each, published now), as an upstream changing between polls;
`GET /requests` says how many list requests it has answered.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

OFFICIAL = "io.modelcontextprotocol.registry/official"


class Upstream:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = sorted(items, key=lambda i: (i["server"]["name"], i["server"]["version"]))
        self.blobs = [orjson.dumps(i) for i in self.items]
        self.updated = [i["_meta"][OFFICIAL]["updatedAt"] for i in self.items]
        self.answered = 0

    async def requests(self, _: web.Request) -> web.Response:
        return web.json_response({"requests": self.answered})

    async def servers(self, request: web.Request) -> web.Response:
        self.answered += 1
        limit = min(int(request.query.get("limit", "30")), 100)
        start = int(request.query.get("cursor", "0") or 0)
        since = request.query.get("updated_since")
        if since is None:
            chosen = list(range(start, min(start + limit, len(self.blobs))))
            end = chosen[-1] + 1 if chosen else start
        else:
            chosen, end = [], start
            floor = datetime.fromisoformat(since.replace("Z", "+00:00"))
            for index in range(start, len(self.blobs)):
                end = index + 1
                if datetime.fromisoformat(self.updated[index].replace("Z", "+00:00")) > floor:
                    chosen.append(index)
                    if len(chosen) == limit:
                        break
        metadata: dict[str, Any] = {"count": len(chosen)}
        if end < len(self.blobs) and len(chosen) == limit:
            metadata["nextCursor"] = str(end)
        body = b'{"servers":[' + b",".join(self.blobs[i] for i in chosen) + b'],"metadata":'
        return web.Response(
            body=body + orjson.dumps(metadata) + b"}", content_type="application/json"
        )

    async def mutate(self, request: web.Request) -> web.Response:
        fraction = float(request.query.get("fraction", "0.01"))
        step = max(1, round(1 / fraction))
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        changed = 0
        for index in range(0, len(self.items), step):
            item = self.items[index]
            item["_meta"][OFFICIAL]["updatedAt"] = now
            item["_meta"][OFFICIAL]["status"] = "deprecated"
            self.blobs[index] = orjson.dumps(item)
            self.updated[index] = now
            changed += 1
        return web.json_response({"changed": changed})


def main() -> None:
    path, port = sys.argv[1], int(sys.argv[2])
    document = orjson.loads(open(path, "rb").read())  # noqa: SIM115
    upstream = Upstream(document["servers"])
    app = web.Application()
    app.router.add_get("/v0.1/servers", upstream.servers)
    app.router.add_post("/mutate", upstream.mutate)
    app.router.add_get("/requests", upstream.requests)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
