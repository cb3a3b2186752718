"""Serving with the default config, as users run the gateway: the access log on, info level,
the logs through a pipe to a process writing them to a file; beside it the same gateway with
its logs turned down (a row that says so), each route against a bare aiohttp handler returning
the same bytes and nginx serving them as files, in the same run.

    python -m bench.defaults [versions per upstream, default 6667] [rounds, default 7]

Each server pinned to one core, wrk on the other; one-second rounds alternating between the
servers; the ratio is the median of the rounds' gateway/bare requests per server CPU-second
(the CPU time of the server's process, every thread, in that round), with the range of single
rounds; requests per second beside it.
Target: every route at >= 0.9x the bare handler with the default config.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.run import bench_serving, gateway

TARGET = 0.9


def rows(per: int, work: Path, rounds: int, quiet: bool) -> list[dict[str, Any]]:
    with gateway(per, work / ("quiet" if quiet else "default"), quiet=quiet) as (base, pid, *_):
        return bench_serving(base, pid, work, float(rounds))


def main() -> int:
    per = int(sys.argv[1]) if len(sys.argv) > 1 else 6667
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    with tempfile.TemporaryDirectory(prefix="gateway-defaults-") as directory:
        work = Path(directory)
        default = rows(per, work, rounds, quiet=False)
        quiet = rows(per, work, rounds, quiet=True)
    print(f"Serving, {3 * per:,} versions, {rounds} one-second rounds per server "
          f"(req/s on one pinned core; target >= {TARGET}x bare with the default config)")  # fmt: skip
    print(f"{'route':18} {'config':31} {'req/CPU-s':>9} {'bare':>9} {'nginx':>9} "
          f"{'x bare':>7} {'rounds':>11} {'req/s x bare':>12} {'p99 ms':>7}")  # fmt: skip
    worst = float("inf")
    for label, found in (("default (access log on)", default),
                         ("logs off, warning (not default)", quiet)):  # fmt: skip
        for row in found:
            ratios = row["cpu_ratios"]
            nginx = row.get("nginx", {}).get("per_cpu", float("nan"))
            print(f"{row['route']:18} {label:31} {row['gateway']['per_cpu']:9.0f} "
                  f"{row['bare']['per_cpu']:9.0f} {nginx:9.0f} {row['cpu_ratio']:6.2f}x "
                  f"{min(ratios):.2f}-{max(ratios):.2f} {row['ratio']:11.2f}x "
                  f"{row['gateway']['p99']:7.2f}")  # fmt: skip
            if found is default:
                worst = min(worst, row["cpu_ratio"])
    median = statistics.median(row["cpu_ratio"] for row in default)
    verdict = "met" if worst >= TARGET else "NOT met"
    print(f"default config: worst route {worst:.2f}x, median {median:.2f}x the bare handler "
          f"(target >= {TARGET}x: {verdict})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
