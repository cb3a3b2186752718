"""Run every benchmark and print one table: `python -m bench.run` (`--quick`: a smoke run).

Each figure is compared in the same run with its baseline or target:
- serving: the gateway against a bare aiohttp handler returning the very same bytes (and nginx
  serving them as static files, when nginx is installed), with wrk, route by route;
- ingest: a cold full sync of one upstream over loopback (pages of 100), then an incremental
  sync with 1 % of the entries changed;
- rebuild: a full snapshot rebuild (3 upstreams, 20-rule policy, 3 views, mirror rewrites)
  while wrk measures serving latency;
- memory: the gateway's peak RSS against the compact JSON size of its data, 1k to 200k;
- workers: `serve --workers 2` against one worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from bench.generate import generate
from bench.scenario import write_catalogs, write_config

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-admin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


# Serving is compared with wrk on one core and the server measured (gateway or baseline) on
# the other, when there are two: neither then competes with the load generator for its core.
SERVER_CPU, LOAD_CPU = ({0}, {1}) if len(os.sched_getaffinity(0)) >= 2 else (None, None)


def pin(pid: int, cpus: set[int] | None) -> None:
    """Move a running process, every thread of it, to these CPUs (None: any)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus or os.sched_getaffinity(0))


@contextmanager
def process(
    *argv: str,
    env: dict[str, str] | None = None,
    cpus: set[int] | None = None,
    stderr: Any = subprocess.DEVNULL,
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
        env={**os.environ, **(env or {})}, start_new_session=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a process and its children (workers), in MB."""
    total = 0
    pids = [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    for one in pids:
        for line in Path(f"/proc/{one}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024


def wrk(
    url: str, seconds: float, connections: int = 32, cpus: set[int] | None = None
) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url],
        capture_output=True, text=True, check=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    ).stdout  # fmt: skip
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(match.group(1)) * units[match.group(2)] if match else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": latency("50"),
        "p99": latency("99"),
        "non2xx": float(errors.group(1)) if errors else 0.0,
    }


# -- ingest ----------------------------------------------------------------------------------


async def _ingest(url: str, state: Path) -> dict[str, float]:
    from gateway.config import UpstreamSettings
    from gateway.feed import Feed

    settings = UpstreamSettings.model_validate(
        {"name": "bench", "url": url, "page_size": 100, "timeout": "60s", "max_drop": 1.0}
    )
    feed = Feed(settings)
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        await feed.sync(session, state)
        full = time.perf_counter() - started
        entries = len(feed.entries)
        async with session.post(f"{url}/mutate?fraction=0.01") as response:
            changed = (await response.json())["changed"]
        started = time.perf_counter()
        await feed.sync(session, state)
        incremental = time.perf_counter() - started
    return {"entries": entries, "full_s": full, "changed": changed, "incremental_s": incremental}


def bench_ingest(versions: int, work: Path) -> dict[str, float]:
    path = work / f"ingest-{versions}.json"
    if not path.exists():
        path.write_bytes(orjson.dumps({"servers": generate(versions, seed=7)}))
    port = free_port()
    with process(PY, "-m", "bench.upstream", str(path), str(port)):
        wait_http(f"http://127.0.0.1:{port}/v0.1/servers?limit=1")
        return asyncio.run(_ingest(f"http://127.0.0.1:{port}", work / "ingest-state"))


# -- the gateway under load --------------------------------------------------------------------


ROUTES = {
    "list limit=100": "/v0.1/servers?limit=100",
    "latest limit=50": "/v0.1/servers?version=latest&limit=50",
    "search": "/v0.1/servers?search=weather&limit=30",
    "versions/latest": None,  # filled in with a real name
    "view page": "/views/payments/v0.1/servers?limit=100",
}


def serve_upstreams(stack: contextlib_exit, files: list[Path]) -> list[dict[str, object]]:
    """A fake upstream per catalog file, each a process on loopback until `stack` exits;
    their settings for gateway.yaml, once each answers."""
    ports = [free_port() for _ in files]
    for path, port in zip(files, ports, strict=True):
        stack.enter(process(PY, "-m", "bench.upstream", str(path), str(port)))
    for port in ports:
        wait_http(f"http://127.0.0.1:{port}/v0.1/servers?limit=1")
    return [
        {"name": f"u{i}", "url": f"http://127.0.0.1:{port}", "refresh": "1h",
         "timeout": "60s", "full_sync": "24h"}
        for i, port in enumerate(ports)
    ]  # fmt: skip


@contextmanager
def gateway(
    per_upstream: int, work: Path, workers: int = 1, quiet: bool = False
) -> Iterator[tuple[str, int, float, str, float]]:
    """3 fake upstreams of `per_upstream` versions and a gateway over them:
    (base URL, pid, JSON MB, the first upstream's URL, seconds from start to ready). Its logs
    go, as a log shipper takes them, through a pipe to a process writing them to a file."""
    files = write_catalogs(work / f"data-{per_upstream}", per_upstream)
    json_mb = sum(p.stat().st_size for p in files) / 1e6
    with contextlib_exit() as stack:
        upstreams = serve_upstreams(stack, files)
        listen = f"127.0.0.1:{free_port()}"
        config = write_config(work / f"cfg-{per_upstream}-{workers}", upstreams, listen=listen,
                              quiet=quiet)  # fmt: skip
        shutil.rmtree(config / "state", ignore_errors=True)
        base = f"http://{listen}"
        argv = [PY, "-m", "gateway", "serve", "--config", str(config), "--workers", str(workers)]
        log = stack.enter(open_log(work / f"gateway-{per_upstream}-{workers}.log"))
        started = time.perf_counter()
        with process(*argv, env={"GATEWAY_ADMIN_TOKEN": TOKEN}, stderr=log) as proc:
            wait_http(f"{base}/readyz", timeout=900)
            ready = time.perf_counter() - started
            wait_idle(base)
            yield base, proc.pid, json_mb, str(upstreams[0]["url"]), ready


@contextmanager
def open_log(path: Path) -> Iterator[Any]:
    """A pipe whose other end a `cat` (on the load generator's core) writes to `path`."""
    with path.open("wb") as file:
        cpus = LOAD_CPU
        shipper = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=file,
                                   preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)  # fmt: skip
        try:
            yield shipper.stdin
        finally:
            assert shipper.stdin is not None
            shipper.stdin.close()
            shipper.wait()


class contextlib_exit:
    def __enter__(self) -> contextlib_exit:
        self.stack: list[Any] = []
        return self

    def enter(self, manager: Any) -> Any:
        value = manager.__enter__()
        self.stack.append(manager)
        return value

    def __exit__(self, *exc: object) -> None:
        for manager in reversed(self.stack):
            manager.__exit__(None, None, None)


def wait_idle(base: str, quiet: float = 3.0) -> None:
    """Until the gateway has not rebuilt its snapshot for `quiet` seconds."""
    last = None
    while True:
        built = orjson.loads(fetch(f"{base}/admin/status"))["snapshotBuiltAt"]
        if built == last:
            return
        last = built
        time.sleep(quiet)


def walk_every_view(base: str) -> int:
    """Every page of every view, as an IDE syncing the whole catalog reads it: whatever a
    build leaves to the first request (package rewrites, the registry `_meta`) is then made.
    Returns the number of pages."""
    views = [view["name"] for view in orjson.loads(fetch(f"{base}/admin/status"))["views"]]
    pages = 0
    for view in views:
        prefix = "" if view == "default" else f"/views/{view}"
        cursor: str | None = None
        while True:
            query = "limit=100" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
            page = orjson.loads(fetch(f"{base}{prefix}/v0.1/servers?{query}"))
            pages += 1
            cursor = page["metadata"].get("nextCursor")
            if not cursor:
                break
    return pages


def fetch(url: str, method: str = "GET") -> bytes:
    request = urllib.request.Request(
        url, method=method, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        body: bytes = response.read()
        return body


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children, every thread counted."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        one = pending.pop()
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{one}/task").iterdir():
                pending.extend(map(int, (task / "children").read_text().split()))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def alternate(
    urls: dict[str, str], seconds: float, pids: dict[str, int] | None = None
) -> dict[str, Any]:
    """wrk on each server in turn, one-second rounds for `seconds` each: how fast a VM's
    cores run drifts by 10-20 % from one second to the next, and rounds this short see both
    servers under the same drift. Per server the mean req/s and the median round's latency;
    the ratio is the median of the rounds' gateway/bare ratios."""
    rounds: dict[str, list[dict[str, float]]] = {label: [] for label in urls}
    for _ in range(max(1, round(seconds))):
        for label, url in urls.items():
            pid = (pids or {}).get(label)
            before = cpu_seconds(pid) if pid else 0.0
            run = wrk(url, 1, cpus=LOAD_CPU)
            if pid:  # requests per second of the server's CPU time
                run["per_cpu"] = run["rps"] / max(cpu_seconds(pid) - before, 1e-3)
            rounds[label].append(run)
    figures: dict[str, Any] = {}
    for label, runs in rounds.items():
        figures[label] = {
            "rps": statistics.fmean(run["rps"] for run in runs),
            "p50": statistics.median(run["p50"] for run in runs),
            "p99": statistics.median(run["p99"] for run in runs),
            "rounds": [run["rps"] for run in runs],
        }
    ratios = [g["rps"] / b["rps"] for g, b in zip(rounds["gateway"], rounds["bare"], strict=True)]
    figures["ratio"] = statistics.median(ratios)
    figures["ratios"] = ratios
    if pids and "gateway" in pids and "bare" in pids:
        for label, runs in rounds.items():
            if label in pids:
                figures[label]["per_cpu"] = statistics.median(run["per_cpu"] for run in runs)
        per_cpu = [g["per_cpu"] / b["per_cpu"]
                   for g, b in zip(rounds["gateway"], rounds["bare"], strict=True)]  # fmt: skip
        figures["cpu_ratio"] = statistics.median(per_cpu)
        figures["cpu_ratios"] = per_cpu
    return figures


def bench_serving(base: str, pid: int, work: Path, seconds: float) -> list[dict[str, Any]]:
    """Each route on the gateway, on the bare baseline, and on nginx, one after the other, each
    server alone on one core and wrk on the other."""
    first = orjson.loads(fetch(f"{base}/v0.1/servers?limit=1"))["servers"][0]["server"]["name"]
    routes = dict(ROUTES)
    routes["versions/latest"] = f"/v0.1/servers/{first.replace('/', '%2F')}/versions/latest"
    static = work / "static"
    static.mkdir(exist_ok=True)
    mapping = {}
    paths: list[str] = []
    for path in routes.values():
        assert path is not None
        paths.append(path)
    for index, path in enumerate(paths):
        (static / f"r{index}.json").write_bytes(fetch(base + path))
        mapping[path] = str(static / f"r{index}.json")
    (work / "routes.json").write_bytes(orjson.dumps(mapping))
    bare_port = free_port()
    nginx = shutil.which("nginx") or (
        Path("/usr/sbin/nginx") if Path("/usr/sbin/nginx").exists() else None
    )
    rows = []
    with contextlib_exit() as stack:
        bare = [PY, "-m", "bench.bare", str(work / "routes.json"), str(bare_port)]
        pids = {"gateway": pid, "bare": stack.enter(process(*bare, cpus=SERVER_CPU)).pid}
        wait_http(f"http://127.0.0.1:{bare_port}{next(iter(mapping))}")
        nginx_port = None
        if nginx:
            nginx_port = free_port()
            conf = work / "nginx.conf"
            conf.write_text(
                f"daemon off; worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx.err;"
                f" events {{}} http {{ access_log off; default_type application/json;"
                f" client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};"
                f" uwsgi_temp_path {work}; scgi_temp_path {work};"
                f" server {{ listen 127.0.0.1:{nginx_port}; root {static}; }} }}"
            )
            server = process(str(nginx), "-c", str(conf), "-p", str(work), cpus=SERVER_CPU)
            pids["nginx"] = stack.enter(server).pid
            wait_http(f"http://127.0.0.1:{nginx_port}/r0.json")
        pin(pid, SERVER_CPU)
        try:
            for index, (label, path) in enumerate(zip(routes, paths, strict=True)):
                row: dict[str, Any] = {"route": label, "bytes": len(Path(mapping[path]).read_bytes())}  # fmt: skip
                urls = {"gateway": base + path, "bare": f"http://127.0.0.1:{bare_port}{path}"}
                if nginx_port:
                    urls["nginx"] = f"http://127.0.0.1:{nginx_port}/r{index}.json"
                row.update(alternate(urls, seconds, pids))
                rows.append(row)
        finally:
            pin(pid, None)
    return rows


REBUILD_LOAD_RATE = 500  # requests per second on a 126 KB list page during rebuilds


async def _fixed_rate(url: str, rate: float, seconds: float) -> dict[str, float]:
    """GET `url` at a fixed rate (an open loop, as independent IDEs send requests), each
    request timed from when it was due: a request held up by a stall counts all its wait,
    which a closed loop like wrk's would leave out (coordinated omission)."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    failures = 0

    async def one(session: aiohttp.ClientSession, due: float) -> None:
        nonlocal failures
        async with session.get(url) as response:
            await response.read()
            if response.status != 200:
                failures += 1
        latencies.append((loop.time() - due) * 1000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        start = loop.time()
        tasks = []
        for index in range(round(rate * seconds)):
            due = start + index / rate
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            tasks.append(asyncio.create_task(one(session, due)))
        await asyncio.gather(*tasks)
    latencies.sort()
    return {
        "rate": rate,
        "requests": len(latencies),
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
        "max": latencies[-1],
        "non2xx": failures,
    }


def _under_load(
    base: str, seconds: float, rebuild: Callable[[], float], pause: float = 0.0
) -> dict[str, Any]:
    """A list page requested at a fixed rate while `rebuild` (which returns the build's
    duration) runs again and again, `pause` seconds apart: the builds that ended meanwhile,
    and the latency of the requests."""
    builds: list[float] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(pause):
            took = rebuild()
            if not stop.is_set():
                builds.append(took)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    url = f"{base}/v0.1/servers?limit=100"
    load = asyncio.run(_fixed_rate(url, REBUILD_LOAD_RATE, seconds))
    stop.set()
    thread.join()
    return {"builds_ms": builds, "load": load}


def bench_rebuild_latency(base: str, seconds: float, upstream_url: str) -> dict[str, Any]:
    """Rebuilds while serving: after an upstream changed 1 % of its entries and is synced (the
    rebuild a gateway does all day); after config reloads that change policy.yaml, so every
    view decides every entry anew (a full build); after a reload that changes nothing a view
    depends on (its items are kept)."""
    status = orjson.loads(fetch(f"{base}/admin/status"))
    directory = Path(status["config"]["directory"])
    policy_file = directory / "policy.yaml"
    original = policy_file.read_text()

    def build_ms() -> float:
        took: float = orjson.loads(fetch(f"{base}/admin/status"))["snapshotBuildMs"]
        return took

    def sync() -> float:
        fetch(f"{upstream_url}/mutate?fraction=0.01", method="POST")
        fetch(f"{base}/admin/upstreams/u0/sync", method="POST")
        return build_ms()

    changes = iter(range(1_000_000))

    def reload_changed() -> float:
        policy = yaml.safe_load(original)
        policy["rules"].append({"deny": {"name": f"zz.bench-reload-{next(changes)}/*"}})
        policy_file.write_text(yaml.safe_dump(policy))
        fetch(f"{base}/admin/reload", method="POST")
        return build_ms()

    syncs = _under_load(base, max(seconds, 5.0), sync)
    # A reload is a rare event: each one starts once the last has settled (its predecessor's
    # catalog freed), as it would in life.
    full = _under_load(base, max(seconds, 15.0), reload_changed, pause=2.0)
    policy_file.write_text(original)
    fetch(f"{base}/admin/reload", method="POST")
    fetch(f"{base}/admin/reload", method="POST")  # this one changes nothing
    return {"first_build_ms": status["snapshotBuildMs"], "syncs": syncs, "full": full,
            "reload_unchanged_ms": build_ms()}  # fmt: skip


# -- search: distinct queries against cached ones ------------------------------------------------

SEARCH_LUA = """
local queries = {}
for line in io.lines(os.getenv("SEARCH_QUERIES")) do queries[#queries + 1] = line end
local next_one = tonumber(os.getenv("SEARCH_START") or "0")
request = function()
  next_one = next_one + 1
  if next_one > #queries then next_one = 1 end
  return wrk.format("GET", "/v0.1/servers?" .. queries[next_one])
end
"""


def search_queries(base: str, count: int, kind: str, seed: int = 11) -> list[str]:
    """`count` distinct searches as people type them, from the served catalog, as URL-encoded
    query strings:
    `names`, a part of a server's name (3 to 14 characters: its namespace, a word of its name,
    its number); `phrases`, the end of a word of a description and the start of the next
    (`ather cal`); `worst`, the start of one word and of another (`weath cal`), which no text
    has but whose trigrams many have: each of those servers is checked."""
    import random

    rng = random.Random(seed)
    names: list[str] = []
    words: set[str] = set()
    cursor: str | None = None
    while len(names) < 20_000:
        query = "limit=100&version=latest" + (
            f"&cursor={urllib.parse.quote(cursor)}" if cursor else ""
        )
        page = orjson.loads(fetch(f"{base}/v0.1/servers?{query}"))
        for entry in page["servers"]:
            names.append(entry["server"]["name"])
            words.update(str(entry["server"].get("description", "")).split())
        cursor = page["metadata"].get("nextCursor")
        if not cursor:
            break
    vocabulary = sorted(words)
    found: dict[str, None] = {}
    tries = 0
    while len(found) < count and tries < 50 * count:
        tries += 1
        if kind == "names":
            name = rng.choice(names)
            size = rng.randint(3, 14)
            at = rng.randint(0, max(0, len(name) - size))
            text = name[at : at + size]
        elif kind == "phrases":
            first, second = rng.choice(vocabulary), rng.choice(vocabulary)
            text = f"{first[-rng.randint(2, len(first)) :]} {second[: rng.randint(1, len(second))]}"
        else:  # "worst": common trigrams, no match (a word cut short, then another's start)
            first, second = rng.choice(vocabulary), rng.choice(vocabulary)
            text = f"{first[: rng.randint(3, len(first) - 1)]} {second[: rng.randint(2, 4)]}"
        found["search=" + urllib.parse.quote(text, safe="")] = None
    return list(found)


def page_queries(base: str, count: int) -> list[str]:
    """`count` plain list pages of 30 (no search) that no client asked for: each starts at a
    cursor of a walk by pages of 5."""
    queries: list[str] = []
    cursor: str | None = None
    while len(queries) < count:
        query = "limit=5" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
        cursor = orjson.loads(fetch(f"{base}/v0.1/servers?{query}"))["metadata"].get("nextCursor")
        if not cursor:
            break
        queries.append(f"limit=30&cursor={urllib.parse.quote(cursor)}")
    return queries


def wrk_script(
    url: str, seconds: float, env: dict[str, str], connections: int = 32
) -> dict[str, float]:
    """wrk with the search script: each request a query from SEARCH_QUERIES, in turn."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "-s", env["SEARCH_SCRIPT"], url],
        capture_output=True, text=True, check=True, env={**os.environ, **env},
        preexec_fn=(lambda: os.sched_setaffinity(0, LOAD_CPU)) if LOAD_CPU else None,
    ).stdout  # fmt: skip
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = re.search(r"(\d+) requests in", out)
    return {"rps": float(rps.group(1)) if rps else 0.0,
            "requests": float(requests.group(1)) if requests else 0.0,
            "non2xx": float(errors.group(1)) if errors else 0.0}  # fmt: skip


def _search_rounds(
    base: str, script: Path, distinct: Path, cached: Path, rounds: int, start: int
) -> tuple[dict[str, Any], int]:
    """Alternating one-second rounds of distinct and cached searches; the cost ratio (cached
    req/s over distinct req/s) of each pair of rounds."""
    figures: dict[str, Any] = {"distinct": [], "cached": [], "ratios": []}
    available = len(distinct.read_text().splitlines())
    for _ in range(rounds):
        if start >= available:
            break  # every query has been asked: more rounds would be answered from the cache
        new = wrk_script(base, 1, {"SEARCH_SCRIPT": str(script), "SEARCH_START": str(start),
                                   "SEARCH_QUERIES": str(distinct)})  # fmt: skip
        start += int(new["requests"]) + 64
        old = wrk_script(base, 1, {"SEARCH_SCRIPT": str(script), "SEARCH_QUERIES": str(cached)})
        figures["distinct"].append(new["rps"])
        figures["cached"].append(old["rps"])
        figures["ratios"].append(old["rps"] / new["rps"] if new["rps"] else float("inf"))
    figures["ratio"] = statistics.median(figures["ratios"])
    return figures, start


def bench_search(base: str, pid: int, work: Path, seconds: float, quick: bool) -> dict[str, Any]:
    """Distinct searches (none asked before: no answer cached) against cached ones (the same
    few, answered from the cache), in alternating one-second rounds, the gateway alone on one
    core and wrk on the other, for each kind of search; then the latency of other requests
    while distinct searches run, against while cached ones run."""
    for _ in range(600):  # the index follows each build in a worker thread
        if orjson.loads(fetch(f"{base}/admin/status"))["search"]["indexed"]:
            break
        time.sleep(0.5)
    rounds = max(3, round(seconds))
    script = work / "search.lua"
    script.write_text(SEARCH_LUA)
    figures: dict[str, Any] = {}
    pin(pid, SERVER_CPU)
    try:
        for kind in ("pages", "names", "phrases", "worst"):
            count = 30_000 if quick else 60_000
            if kind == "pages":
                queries = page_queries(base, count)
            else:
                queries = search_queries(base, count, kind)
            distinct, cached = work / f"{kind}.txt", work / f"{kind}-cached.txt"
            distinct.write_text("\n".join(queries[50:]) + "\n")
            cached.write_text("\n".join(queries[:50]) + "\n")
            for query in queries[:50]:  # answered once: from then on, from the cache
                fetch(f"{base}/v0.1/servers?{query}")
            figures[kind], used = _search_rounds(base, script, distinct, cached, rounds, 0)
            figures[kind]["queries"] = len(queries) - 50
            figures[kind]["repeated"] = used > len(queries) - 50  # the last round ran out
        # Other requests meanwhile: a 1 KB lookup at a fixed rate while wrk searches.
        first = orjson.loads(fetch(f"{base}/v0.1/servers?limit=1"))["servers"][0]["server"]["name"]
        probe = f"{base}/v0.1/servers/{first.replace('/', '%2F')}/versions/latest"
        for label, kind, file in (
            ("during distinct", "names", "names.txt"),
            ("during worst", "worst", "worst.txt"),
            ("during cached", "names", "names-cached.txt"),
        ):
            env = {"SEARCH_SCRIPT": str(script), "SEARCH_QUERIES": str(work / file),
                   "SEARCH_START": str(figures[kind]["queries"] // 2)}  # fmt: skip
            result: dict[str, Any] = {}
            load = threading.Thread(
                target=lambda e=env, r=result: r.update(wrk_script(base, 5, e, connections=8))
            )
            load.start()
            time.sleep(0.3)
            figures[label] = asyncio.run(_fixed_rate(probe, 200, 4.0))
            load.join()
            figures[label]["search_rps"] = result.get("rps", 0.0)
    finally:
        pin(pid, None)
    figures["status"] = orjson.loads(fetch(f"{base}/admin/status"))["search"]
    return figures


def _versus_page(found: dict[str, Any], kind: str) -> float:
    """What a distinct request of this kind costs against a plain page nobody asked before
    (both from the same run: their median req/s)."""
    return float(
        statistics.median(found["pages"]["distinct"]) / statistics.median(found[kind]["distinct"])
    )


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny catalogs, short runs (CI smoke)")
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk duration per route")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    seconds = 1.0 if args.quick else args.seconds
    curve = [334, 1000] if args.quick else [334, 6667, 22000, 66667]  # per upstream, x3
    ingest_size = 1000 if args.quick else 66000
    results: dict[str, Any] = {"machine": f"{os.cpu_count()} cores", "quick": args.quick}
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    try:
        ingest = bench_ingest(ingest_size, work)
        results["ingest"] = ingest
        print_table(
            "Ingest: one upstream over loopback, pages of 100 (target: full < 15 s at 66k, incremental < 1 s)",
            ["versions", "cold full sync", "changed", "incremental sync"],
            [[str(ingest["entries"]), f"{ingest['full_s']:.2f} s", str(ingest["changed"]),
              f"{ingest['incremental_s']:.3f} s"]],
        )  # fmt: skip
        memory_rows: list[dict[str, Any]] = []
        curve_rows: list[list[str]] = []
        for per in curve:
            with gateway(per, work) as (base, pid, json_mb, upstream_url, ready):
                status = orjson.loads(fetch(f"{base}/admin/status"))
                results["compiled"] = status["compiled"]
                ready_rss = peak_rss_mb(pid)
                walk_started = time.perf_counter()
                pages = walk_every_view(base)
                walk_s = time.perf_counter() - walk_started
                rss = peak_rss_mb(pid)  # the peak so far, every item made
                row = {"versions": 3 * per, "json_mb": json_mb, "ready_rss_mb": ready_rss,
                       "peak_rss_mb": rss, "ratio": rss / json_mb, "ready_s": ready,
                       "build_ms": status["snapshotBuildMs"], "walk_pages": pages,
                       "walk_s": walk_s}  # fmt: skip
                memory_rows.append(row)
                curve_rows.append([str(3 * per), f"{json_mb:.1f} MB", f"{ready_rss:.0f} MB",
                                   f"{rss:.0f} MB", f"{rss / json_mb:.1f}x", f"{ready:.1f} s",
                                   f"{row['build_ms']:.0f} ms", f"{pages} in {walk_s:.1f} s"])  # fmt: skip
                if per == curve[-1]:
                    results["serving"] = bench_serving(base, pid, work, seconds)
                    results["search"] = bench_search(base, pid, work, seconds, args.quick)
                    results["rebuild"] = bench_rebuild_latency(
                        base, max(seconds, 3.0), upstream_url
                    )
        results["memory"] = memory_rows
        print(
            "\nThe gateway's snapshot build: "
            + (
                "compiled (mypyc)"
                if results["compiled"]
                else "pure Python (see setup.py to compile)"
            )
        )
        print_table(
            "Memory and time by catalog size (3 upstreams, 3 views, 20 rules, mirrors; target RSS < 4x JSON)",
            [
                "versions",
                "compact JSON",
                "RSS when ready",
                "peak RSS, every page served",
                "peak/JSON",
                "start to ready",
                "snapshot build",
                "pages of every view",
            ],
            curve_rows,
        )
        serving_rows = []
        for row in results["serving"]:
            cells = [row["route"], f"{row['bytes'] / 1024:.0f} KB",
                     f"{row['gateway']['rps']:.0f}", f"{row['gateway']['p50']:.2f}/{row['gateway']['p99']:.2f}",
                     f"{row['bare']['rps']:.0f}", f"{row['bare']['p50']:.2f}/{row['bare']['p99']:.2f}",
                     f"{row['ratio']:.2f}x", f"{min(row['ratios']):.2f}-{max(row['ratios']):.2f}x"]  # fmt: skip
            cells.append(f"{row['nginx']['rps']:.0f}" if "nginx" in row else "-")
            serving_rows.append(cells)
        print_table(
            f"Serving, {3 * curve[-1]} versions (req/s; latency p50/p99 ms; target ratio >= 0.8x bare;"
            " servers on one core, wrk on the other, alternating one-second rounds)",
            [
                "route",
                "size",
                "gateway",
                "gw ms",
                "bare aiohttp",
                "bare ms",
                "ratio (median)",
                "rounds",
                "nginx",
            ],
            serving_rows,
        )
        found = results["search"]
        print_table(
            f"Search, {3 * curve[-1]} versions (target: a distinct query costs at most 2x a cached one;"
            " req/s, the gateway on one core, wrk on the other, alternating one-second rounds)",
            ["requests", "distinct req/s", "cached req/s", "cost ratio (median)", "ratio rounds",
             "cost vs a page not cached"],
            [[f"{kind}: {label} ({len(found[kind]['ratios'])} rounds"
              f"{', the last ran out' if found[kind]['repeated'] else ''})",
              f"{statistics.fmean(found[kind]['distinct']):.0f}",
              f"{statistics.fmean(found[kind]['cached']):.0f}", f"{found[kind]['ratio']:.2f}x",
              f"{min(found[kind]['ratios']):.2f}-{max(found[kind]['ratios']):.2f}x",
              f"{_versus_page(found, kind):.2f}x"]
             for kind, label in (("pages", "a list page of 30, no search"),
                                 ("names", "part of a server's name"),
                                 ("phrases", "the end of a word and the start of another"),
                                 ("worst", "no match, every trigram common"))],
        )  # fmt: skip
        print_table(
            "Other requests while searches run (a 1 KB lookup at 200/s, latency from when due;"
            " wrk searching on 8 connections meanwhile)",
            ["meanwhile", "searches/s", "lookup p50", "lookup p99", "lookup max"],
            [[label, f"{found[label]['search_rps']:.0f}", f"{found[label]['p50']:.2f} ms",
              f"{found[label]['p99']:.2f} ms", f"{found[label]['max']:.1f} ms"]
             for label in ("during distinct", "during worst", "during cached")],
        )  # fmt: skip
        rebuild = results["rebuild"]
        syncs, full = rebuild["syncs"], rebuild["full"]

        def spread(builds: list[float]) -> str:
            return f"{len(builds)} x, {min(builds, default=0):.0f}-{max(builds, default=0):.0f} ms"

        print_table(
            "Rebuilds of every view while serving (target: < 3000 ms, serving p99 < 50 ms;"
            f" the list page requested at {REBUILD_LOAD_RATE}/s meanwhile)",
            ["rebuild", "builds", "list p50", "list p99", "list max"],
            [["first build, at start (no load)", f"{rebuild['first_build_ms']:.0f} ms", "-", "-", "-"],
             *([label, spread(one["builds_ms"]), f"{one['load']['p50']:.2f} ms",
                f"{one['load']['p99']:.2f} ms", f"{one['load']['max']:.1f} ms"]
               for label, one in (("after a sync that changed 1 %", syncs),
                                  ("full: a reload that changes policy.yaml", full))),
             ["a reload that changes nothing a view uses", f"{rebuild['reload_unchanged_ms']:.0f} ms",
              "-", "-", "-"]],
        )  # fmt: skip
        worker_rows: list[list[str]] = []
        for workers in (1, 2):
            with gateway(curve[0], work, workers=workers) as (base, _, _, _, _):
                time.sleep(1.0 if workers > 1 else 0)  # let every worker finish its first build
                page = orjson.loads(fetch(f"{base}/v0.1/servers?limit=1"))
                name = page["servers"][0]["server"]["name"].replace("/", "%2F")
                cells = [str(workers)]
                # The list page (100 KB) is mostly wrk's and the kernel's work; the 1 KB lookup
                # is mostly the gateway's, so it shows what a second process adds.
                for path in ("/v0.1/servers?limit=100", f"/v0.1/servers/{name}/versions/latest"):
                    load = wrk(base + path, seconds, connections=64)
                    cells.extend((f"{load['rps']:.0f}", f"{load['p99']:.2f} ms"))
                worker_rows.append(cells)
        results["workers"] = worker_rows
        print_table(
            "Workers (serve --workers N, SO_REUSEPORT; wrk on the same two cores)",
            ["workers", "list req/s", "list p99", "versions/latest req/s", "p99"],
            worker_rows,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
