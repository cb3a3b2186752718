"""The catalog page at several thousand servers, as users run the gateway: `serve` in its own
process with the default settings (access log on, info level), over the web tests' generated
catalog (npm, PyPI and OCI packages, remotes, deprecated ones, a view), 3 versions at most each.

    python -m bench.pages [servers, default 5000] [rounds, default 5]

Each page is asked once cold (the first after the catalog was built: the page works out its
servers' facts then, once per build), then `rounds` times; the figure is the request's time
seen by a client on the same machine, one request at a time (so the server's time, plus the
client's, under a millisecond). The first page that filters by what the mirrors said renders
every server's latest version once (as an IDE walking the catalog would have). Baseline in the same run: the API's list page of 50
(`/v0.1/servers?limit=50`, which the gateway caches). Target: a filtered page in under 200 ms.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.run import PY, free_port, process
from tests.web_catalog import write_many_config

PAGES = (
    ("every server, by name", "/"),
    ("remote ones", "/?transport=remote"),
    ("npm, active, by update", "/?type=npm&status=active&sort=updated"),
    ("a search and a filter", "/?q=weather&transport=local"),
    ("a search, second page", "/?q=team&after=io.github.team10%2Fweather-00210"),
    ("a view, a search, a page back", "/views/payments/?q=files&before=io.github.team40"),
    ("not yet checked on the mirror", "/?mirror=unknown&sort=updated"),
)
TARGET_MS = 200.0


async def timed(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.get(url, headers={"Accept-Encoding": "gzip"}) as response:
        await response.read()
        assert response.status == 200, (url, response.status)
    return (time.perf_counter() - started) * 1000


async def measure(base: str, rounds: int) -> list[tuple[str, float, list[float]]]:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):  # ready: the catalog is built
            try:
                async with session.get(base + "/readyz") as ready:
                    if ready.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        rows = []
        for label, path in (("API list page (baseline)", "/v0.1/servers?limit=50"), *PAGES):
            cold = await timed(session, base + path)
            warm = [await timed(session, base + path) for _ in range(rounds)]
            rows.append((label, cold, warm))
        return rows


def main() -> int:
    servers = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with tempfile.TemporaryDirectory() as directory:
        port = free_port()
        config = Path(directory) / "config"
        write_many_config(config, servers, access_log=True, listen=f"127.0.0.1:{port}")
        with process(PY, "-m", "gateway", "serve", "--config", str(config)):
            rows = asyncio.run(measure(f"http://127.0.0.1:{port}", rounds))
    print(f"catalog pages at {servers:,} servers, {rounds} rounds (ms; target < {TARGET_MS:.0f})")
    print(f"{'page':34} {'cold':>8} {'median':>8} {'range':>15} {'x API':>7} {'x target':>9}")
    base = statistics.median(rows[0][2])
    for label, cold, warm in rows:
        median = statistics.median(warm)
        spread = f"{min(warm):.1f}-{max(warm):.1f}"
        print(f"{label:34} {cold:8.1f} {median:8.1f} {spread:>15} {median / base:6.1f}x "
              f"{median / TARGET_MS:8.2f}x")  # fmt: skip
    worst = max(max(warm) for _, _, warm in rows[1:])
    print(f"slowest page after the first: {worst:.1f} ms ({worst / TARGET_MS:.2f}x the target)")
    return 0 if worst < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
