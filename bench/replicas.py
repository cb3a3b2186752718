"""Two replicas sharing one catalog through S3-compatible storage (`snapshot_store`), as users
run them: what the one that follows costs and how soon it serves what the holder built.

    python -m bench.replicas [versions per upstream, default 66667] [rounds, default 1]

The benchmark's scenario (3 upstreams over loopback, the 20-rule policy, 3 views, mirrors,
the default config) and moto's S3 server on loopback (the test extra). Replica A starts
first and takes the lease; replica B starts once A is ready. Printed per round: each
replica's seconds from start to ready, the upstream list requests after both are ready
(counted by the upstreams; one replica syncing alone makes as many), A's time to put a
catalog (pack and upload), B's to read it and serve it, each replica's PSS once every page of
`limit=100` was read from it, and the seconds from a sync that changed 1 % of one upstream
(asked of A) until B serves the new catalog (`snapshotBuiltAt` in its status changes), and
for that change the catalog in part A put (seconds, MB) and B's time to read it and serve it
(nan when it went whole), and what that sync cost A: its CPU seconds (the sync, the build and
what it put) and the MB it put in the store. Each round runs the default config and, as the
baseline in the same run, `whole_every: 0s` (the whole catalog put again after every sync, as
every sync did before catalogs in part were chained).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import orjson
import yaml

from bench.run import (
    PY,
    TOKEN,
    contextlib_exit,
    cpu_seconds,
    fetch,
    free_port,
    open_log,
    process,
    serve_upstreams,
    wait_http,
)
from bench.scenario import write_catalogs, write_config
from gateway import compiled

BUCKET = "catalogs"


def _pss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _events(log: Path, event: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in log.read_bytes().splitlines()
            if f'"event":"{event}"'.encode() in line]  # fmt: skip


def _walk(base: str) -> None:
    url = f"{base}/v0.1/servers?limit=100"
    while url:
        cursor = orjson.loads(fetch(url))["metadata"].get("nextCursor")
        url = f"{base}/v0.1/servers?limit=100&cursor={cursor}" if cursor else ""


def _etag(base: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{base}/v0.1/servers?limit=30", timeout=60) as answer:
        return str(answer.headers["ETag"])


def _built(base: str) -> str:
    """When the catalog a replica serves was built (by whichever replica built it)."""
    return str(orjson.loads(fetch(f"{base}/admin/status"))["snapshotBuiltAt"])


def one(per: int, work: Path, whole_every: str | None) -> dict[str, float]:
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    assert moto, "moto_server is missing: pip install -e '.[test]'"
    files = write_catalogs(work / f"data-{per}", per)
    with contextlib_exit() as stack:
        s3_port = free_port()
        stack.enter(process(moto, "-H", "127.0.0.1", "-p", str(s3_port)))
        s3 = f"http://127.0.0.1:{s3_port}"
        wait_http(f"{s3}/", timeout=30)
        subprocess.run([PY, "-c", "import boto3; boto3.client('s3', endpoint_url="
                        f"'{s3}', aws_access_key_id='t', aws_secret_access_key='t', "
                        f"region_name='us-east-1').create_bucket(Bucket='{BUCKET}')"],
                       check=True)  # fmt: skip
        upstreams = serve_upstreams(stack, files)
        config = write_config(work / "cfg", upstreams)
        gateway = yaml.safe_load((config / "gateway.yaml").read_text())
        gateway["snapshot_store"] = {"url": f"s3://{BUCKET}/bench", "endpoint": s3,
                                     "access_key_id": "t", "secret_access_key": "t",
                                     "poll": "1s",
                                     **({"whole_every": whole_every} if whole_every else {})}  # fmt: skip
        (config / "gateway.yaml").write_text(yaml.safe_dump(gateway))
        bases, pids, logs, ready = [], [], [], []
        for name in ("a", "b"):
            port = free_port()
            log_path = work / f"{name}.log"
            log = stack.enter(open_log(log_path))
            started = time.perf_counter()
            proc = stack.enter(process(
                PY, "-m", "gateway", "serve", "--config", str(config), "--listen",
                f"127.0.0.1:{port}", "--state-dir", str(work / f"state-{name}"),
                env={"GATEWAY_ADMIN_TOKEN": TOKEN}, stderr=log,
            ))  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/readyz", timeout=900)
            ready.append(time.perf_counter() - started)
            bases.append(base)
            pids.append(proc.pid)
            logs.append(log_path)
            if name == "a":  # B starts once A has put its first catalog
                while not _events(log_path, "replica_catalog_put"):
                    time.sleep(0.2)
        while _built(bases[1]) != _built(bases[0]):
            time.sleep(0.2)
        requests = sum(orjson.loads(fetch(f"{u['url']}/requests"))["requests"]
                       for u in upstreams)  # fmt: skip
        for base in bases:
            _walk(base)
        time.sleep(1.5)
        put = _events(logs[0], "replica_catalog_put")[-1]["duration_ms"] / 1000
        served = _events(logs[1], "replica_catalog_served")[-1]["duration_ms"] / 1000
        pss = [_pss(pid) for pid in pids]
        before = _built(bases[1])
        puts_before = len(_events(logs[0], "replica_catalog_put"))
        cpu_before = cpu_seconds(pids[0])
        fetch(f"{upstreams[0]['url']}/mutate?fraction=0.01", "POST")
        started = time.perf_counter()
        fetch(f"{bases[0]}/admin/upstreams/u0/sync", "POST")
        while _built(bases[1]) == before:
            time.sleep(0.05)
        reached = time.perf_counter() - started
        wanted = {True, False} if whole_every == "0s" else {True}  # the part, and the whole one
        while {e["part"] for e in _events(logs[0], "replica_catalog_put")[puts_before:]} < wanted:
            time.sleep(0.2)
        holder_cpu = cpu_seconds(pids[0]) - cpu_before
        put_mb = sum(e["bytes"] for e in _events(logs[0], "replica_catalog_put")[puts_before:])
        time.sleep(1.5)  # the lines written
        parts = [e for e in _events(logs[0], "replica_catalog_put") if e.get("part")]
        taken = [e for e in _events(logs[1], "replica_catalog_served") if e.get("part")]
        return {"ready_a": ready[0], "ready_b": ready[1], "requests": requests, "put": put,
                "served": served, "pss_a": pss[0], "pss_b": pss[1], "change": reached,
                "part_put": parts[-1]["duration_ms"] / 1000 if parts else float("nan"),
                "part_mb": parts[-1]["bytes"] / 1e6 if parts else float("nan"),
                "part_served": taken[-1]["duration_ms"] / 1000 if taken else float("nan"),
                "sync_cpu_a": holder_cpu, "sync_put_mb": put_mb / 1e6}  # fmt: skip


def main() -> None:
    per = int(sys.argv[1]) if len(sys.argv) > 1 else 66667
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    print(f"{3 * per:,} versions, {rounds} round(s), compiled: {compiled()}", flush=True)
    results: dict[str, list[dict[str, float]]] = {"default": [], "whole_every 0s": []}
    for round_ in range(rounds):
        for label, results_of in results.items():
            with TemporaryDirectory() as tmp:
                result = one(per, Path(tmp), "0s" if label != "default" else None)
            results_of.append(result)
            print(f"round {round_ + 1}, {label}: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in result.items()), flush=True)  # fmt: skip
    for label, results_of in results.items():
        print(f"{label}:")
        for key in results_of[0]:
            values = [r[key] for r in results_of]
            print(f"  {key}: median {statistics.median(values):.2f} "
                  f"({min(values):.2f}-{max(values):.2f})")  # fmt: skip
    for key in ("sync_cpu_a", "sync_put_mb", "change"):
        ratio = statistics.median(r[key] for r in results["default"]) / statistics.median(
            r[key] for r in results["whole_every 0s"]
        )
        print(f"{key}: default / whole_every 0s = {ratio:.2f}x")


if __name__ == "__main__":
    main()
