"""`serve --workers N` as users run it: one worker syncs and builds, the others read back what
it built. What N workers cost against one, in the same run.

    python -m bench.workers [versions per upstream, default 66667] [rounds, default 2]

The benchmark's scenario (3 upstreams over loopback, the 20-rule policy, 3 views, mirrors,
the default config) with 1 and 2 workers, alternating. For each: the seconds from start to
ready (every worker: 20 `/readyz` over connections of their own all 200), until every worker
serves a catalog of its own (a following worker answers through the building one until it has
read the first back: its first `catalog_swapped`), the upstream list
requests made until then (counted by the upstreams), the memory of every process once each
page of `limit=100` was served (each over a connection of its own, so both workers serve
pages): peak RSS summed (VmHWM: what each process held at most, shared pages counted in each)
and PSS summed now (shared pages divided among the processes that map them: what the workers
take together); then a sync that changed 1 % of one upstream, asked of any worker, timed
until its answer (synced, built, read back by every worker and swapped in), the catalog
written for the others (`shared_catalog_offered`) and how far apart the workers swapped.
Printed: medians and ranges; the memory ratio N / 1, against the target 1 + 0.3 (N - 1).
"""

from __future__ import annotations

import statistics
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory

import orjson
import yaml

from bench.run import TOKEN, gateway
from gateway import compiled

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _get(url: str, method: str = "GET") -> bytes:
    request = urllib.request.Request(url, headers=AUTH, method=method)
    with urllib.request.urlopen(request, timeout=600) as response:  # a connection each
        body: bytes = response.read()
        return body


def _processes(pid: int) -> list[int]:
    return [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]


def _memory(pid: int) -> tuple[float, float]:
    """(peak RSS summed, PSS summed now) of the process and its workers, in MB."""
    peak = pss = 0
    for one in _processes(pid):
        for line in Path(f"/proc/{one}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak += int(line.split()[1])
        for line in Path(f"/proc/{one}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1])
    return peak / 1024, pss / 1024


def _requests(config: Path) -> int:
    """The list requests every upstream of the config has answered."""
    upstreams = yaml.safe_load((config / "gateway.yaml").read_text())["upstreams"]
    return sum(orjson.loads(_get(f"{u['url']}/requests"))["requests"] for u in upstreams)


def _events(log: Path, event: str) -> list[dict[str, object]]:
    found = []
    for line in log.read_bytes().splitlines():
        if b'"event":"' + event.encode() + b'"' in line:
            found.append(orjson.loads(line))
    return found


def _own(log: Path, workers: int, ready: float) -> float:
    """Seconds from the start until every worker serves a catalog of its own (a following
    worker answers through the building one until then): ready, plus the time from the
    building worker's first `catalog_swapped` to the last worker's first (their lines)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        first: dict[object, datetime] = {}
        for swap in _events(log, "catalog_swapped"):
            first.setdefault(swap.get("worker", 0), datetime.fromisoformat(str(swap["timestamp"])))
        if len(first) >= workers:
            return ready + (max(first.values()) - first[0]).total_seconds()
        time.sleep(0.05)
    raise RuntimeError(f"a worker served no catalog of its own within 10 minutes ({log})")


def one(per: int, work: Path, workers: int) -> dict[str, float]:
    with gateway(per, work, workers=workers) as (base, pid, json_mb, u0, ready):
        while not all(_get(f"{base}/readyz") for _ in range(20)):
            time.sleep(0.1)
        log = work / f"gateway-{per}-{workers}.log"
        own = _own(log, workers, ready)  # memory: once every worker holds its copy
        requests = _requests(work / f"cfg-{per}-{workers}")
        url, pages = f"{base}/v0.1/servers?limit=100", 0
        while url:
            cursor = orjson.loads(_get(url))["metadata"].get("nextCursor")
            pages += 1
            url = f"{base}/v0.1/servers?limit=100&cursor={cursor}" if cursor else ""
        time.sleep(1.0)
        peak, pss = _memory(pid)
        _get(f"{u0}/mutate?fraction=0.01", "POST")
        started = time.perf_counter()
        _get(f"{base}/admin/upstreams/u0/sync", "POST")
        synced = time.perf_counter() - started
        time.sleep(1.5)  # lines are written at least every second
        swaps = _events(log, "catalog_swapped")
        moments: dict[object, datetime] = {}
        for swap in swaps:
            moments[swap.get("worker", 0)] = datetime.fromisoformat(str(swap["timestamp"]))
        apart = (max(moments.values()) - min(moments.values())).total_seconds()
        offered = _events(log, "shared_catalog_offered")
        packed = float(str(offered[-1]["packed_ms"])) / 1000 if offered else 0.0
        return {"ready": ready, "own": own, "requests": requests, "peak": peak, "pss": pss, "json": json_mb,
                "sync": synced, "packed": packed, "apart": apart, "pages": pages}  # fmt: skip


def main() -> None:
    per = int(sys.argv[1]) if len(sys.argv) > 1 else 66667
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    print(f"{3 * per:,} versions, {rounds} rounds, compiled: {compiled()}", flush=True)
    results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    with TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            for workers in (1, 2) if round_ % 2 == 0 else (2, 1):
                result = one(per, Path(tmp), workers)
                results[workers].append(result)
                print(f"round {round_ + 1}, {workers} worker(s): "
                      + ", ".join(f"{k} {v:.2f}" for k, v in result.items()), flush=True)  # fmt: skip

    def cell(workers: int, key: str, digits: int = 2) -> str:
        values = [r[key] for r in results[workers]]
        return (f"{statistics.median(values):,.{digits}f} "
                f"({min(values):,.{digits}f}-{max(values):,.{digits}f})")  # fmt: skip

    print(
        "\n| workers | ready s | each serves its own s | upstream requests | peak RSS MB, summed "
        "| PSS MB, summed | sync 1 % to served s | catalog packed s | swapped apart s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for workers in (1, 2):
        print(f"| {workers} | {cell(workers, 'ready')} | {cell(workers, 'own')} "
              f"| {cell(workers, 'requests', 0)} "
              f"| {cell(workers, 'peak', 0)} | {cell(workers, 'pss', 0)} | {cell(workers, 'sync')} "
              f"| {cell(workers, 'packed')} | {cell(workers, 'apart', 3)} |")  # fmt: skip
    for key in ("peak", "pss"):
        ratio = statistics.median(r[key] for r in results[2]) / statistics.median(
            r[key] for r in results[1]
        )
        print(f"{key}: 2 workers / 1 = {ratio:.2f}x (target < 1.30x)")


if __name__ == "__main__":
    main()
