"""A restart, as users run the gateway: how soon the port answers, and how soon it is ready.

    python -m bench.restart [versions per upstream, default 66667] [rounds, default 5]

The benchmark's scenario (3 upstreams over loopback, the 20-rule policy, 3 views, mirrors,
the default config: access log on, info level, logs through a pipe to a file). The gateway
starts once, syncs, builds and keeps its catalog (`snapshot.pack`); then it is stopped and
started again, in alternating rounds:
- **kept**: the default config, which keeps its catalog when it stops and serves it at the
  next start before it loads any state;
- **state** (the baseline, the same run): `keep_catalog: false`, which loads every upstream's
  state file and builds before it serves (what every restart did before).
Each round times, from the process's start, the first answer of the port (a 503 with
Retry-After while it starts) and the first 200 of `/readyz` (polled every 10 ms), then waits
until the first build after the restart is swapped in, and stops the gateway (SIGTERM),
timing its exit (with the default config it keeps its catalog as it stops).
Printed: the medians and ranges, and the ratio state / kept. Target: ready < 2 s at 200k.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import orjson
import yaml

from bench.run import (
    PY,
    TOKEN,
    contextlib_exit,
    free_port,
    open_log,
    process,
    serve_upstreams,
    wait_http,
    wait_idle,
)
from bench.scenario import write_catalogs, write_config
from gateway import compiled

KEPT = "snapshot.pack"


def _status(port: int, path: str) -> int | None:
    """The status of a GET, or None while nothing listens."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def _built_at(port: int) -> str | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/admin/status", headers={"Authorization": f"Bearer {TOKEN}"})
        built: str | None = orjson.loads(connection.getresponse().read())["snapshotBuiltAt"]
        return built
    finally:
        connection.close()


def one_start(config: Path, port: int, log: object, kept: bool) -> tuple[float, float, float]:
    """Start the gateway on a config with saved state: seconds to the port's first answer
    and to ready; once the first build after the start is served (with a kept catalog, the
    one after it), SIGTERM, and seconds until it has exited (keeping its catalog)."""
    started = time.perf_counter()
    answered = None
    argv = [PY, "-m", "gateway", "serve", "--config", str(config)]
    with process(*argv, env={"GATEWAY_ADMIN_TOKEN": TOKEN}, stderr=log) as proc:
        while True:
            status = _status(port, "/readyz")
            now = time.perf_counter() - started
            if status is not None and answered is None:
                answered = now
            if status == 200:
                ready = now
                break
            if now > 300:
                raise RuntimeError("not ready within 300 s")
            time.sleep(0.01)
        first = _built_at(port)
        while kept and _built_at(port) == first:  # the build after the restart, swapped in
            time.sleep(0.05)
        stopping = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        stopped = time.perf_counter() - stopping
    return answered or ready, ready, stopped


def main(argv: list[str]) -> None:
    per_upstream = int(argv[0]) if argv else 66_667
    rounds = int(argv[1]) if len(argv) > 1 else 5
    with TemporaryDirectory(prefix="bench-restart-") as tmp, contextlib_exit() as stack:
        work = Path(tmp)
        files = write_catalogs(work / "data", per_upstream)
        json_mb = sum(p.stat().st_size for p in files) / 1e6
        upstreams = serve_upstreams(stack, files)
        port = free_port()
        kept = write_config(work / "kept", upstreams, listen=f"127.0.0.1:{port}")
        state = write_config(work / "state", upstreams, listen=f"127.0.0.1:{port}")
        settings = yaml.safe_load((state / "gateway.yaml").read_text())
        settings["state_dir"] = str(kept / "state")  # the same state files, nothing kept
        settings["keep_catalog"] = False
        (state / "gateway.yaml").write_text(yaml.safe_dump(settings))
        log = stack.enter(open_log(Path(os.environ.get("BENCH_LOG", work / "gateway.log"))))
        argv_first = [PY, "-m", "gateway", "serve", "--config", str(kept)]
        with process(*argv_first, env={"GATEWAY_ADMIN_TOKEN": TOKEN}, stderr=log):
            wait_http(f"http://127.0.0.1:{port}/readyz", timeout=900)
            wait_idle(f"http://127.0.0.1:{port}")
        assert (kept / "state" / KEPT).exists(), "kept when it stopped"
        size_mb = (kept / "state" / KEPT).stat().st_size / 1e6
        times: dict[str, list[tuple[float, float, float]]] = {"kept": [], "state": []}
        for _ in range(rounds):
            for name, config in (("kept", kept), ("state", state)):
                times[name].append(one_start(config, port, log, name == "kept"))
        shutil.rmtree(work / "data", ignore_errors=True)
    print(f"compiled build: {compiled()}; {3 * per_upstream:,} versions, upstream JSON "
          f"{json_mb:.0f} MB, kept catalog {size_mb:.0f} MB; {rounds} alternating rounds")  # fmt: skip
    print("| start | port answers (median, range) | ready (median, range) | stop (median, range) |")
    print("|---|---|---|---|")
    for name, label in (("kept", "the kept catalog (default)"),
                        ("state", "state files and a build (keep_catalog: false)")):  # fmt: skip
        columns = [[t[at] for t in times[name]] for at in range(3)]
        print(
            f"| {label} | "
            + " | ".join(
                f"{statistics.median(c):.2f} s ({min(c):.2f}-{max(c):.2f})" for c in columns
            )
            + " |"
        )
    kept_ready = statistics.median(r for _, r, _ in times["kept"])
    state_ready = statistics.median(r for _, r, _ in times["state"])
    print(
        f"ready: {state_ready / kept_ready:.1f}x sooner with the kept catalog; "
        f"target < 2 s: {'met' if kept_ready < 2 else 'NOT met'} ({kept_ready:.2f} s)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
