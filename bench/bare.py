"""The serving baseline: a bare aiohttp handler returning the very same bytes per URL.

Run: python -m bench.bare ROUTES.json PORT, where ROUTES maps a path with query to a file.
A client that takes gzip gets FILE.gz where there is one (Content-Encoding: gzip).
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
from aiohttp import web


def main() -> None:
    files = orjson.loads(Path(sys.argv[1]).read_bytes())
    routes = {k: Path(v).read_bytes() for k, v in files.items()}
    squeezed = {
        k: Path(v + ".gz").read_bytes() for k, v in files.items() if Path(v + ".gz").exists()
    }

    async def handler(request: web.Request) -> web.Response:
        body = routes.get(request.raw_path)
        if body is None:
            return web.Response(status=404)
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            gzipped = squeezed.get(request.raw_path)
            if gzipped is not None:
                return web.Response(body=gzipped, content_type="application/json",
                                    headers={"Content-Encoding": "gzip"})  # fmt: skip
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None)


if __name__ == "__main__":
    main()
