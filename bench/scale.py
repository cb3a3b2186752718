"""How the gateway grows with its catalog, up to a million versions.

    python -m bench.scale [versions per upstream, comma-separated; default 66667,200000,333334]
                          [rounds of rebuilds after a 1 % change, default 3] [--served]

For each size (3 upstreams, the benchmark's 20-rule policy, 3 views, mirrors), in-process:
the first build, a full rebuild (nothing kept, as after a reload that changes `policy.yaml`)
and rebuilds after a sync that changed 1 % of one upstream's entries. The baseline, in the
same run, is the full rebuild: a rebuild whose work follows what changed costs a small
fraction of it, one whose work follows the catalog costs a large one. Printed: each time, the
1 % rebuild's ratio to the full rebuild, and the targets (1 % rebuild < 1 s and full rebuild
< 6 s at 1M versions).

With `--served`, each size is also served as users run it (`python -m bench.run`'s gateway:
upstreams over loopback, default logging): start to ready, RSS when ready, and the peak RSS
after a client has read every page of every view, against the compact JSON (target < 4x).
"""

from __future__ import annotations

import gc
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from pathlib import Path

import orjson

from bench.packing import scenario
from bench.run import fetch, gateway, peak_rss_mb, walk_every_view
from bench.scenario import POLICY
from bench.trust import feed
from gateway import compiled
from gateway.config import PolicySettings
from gateway.entry import Entry, parse_item
from gateway.snapshot import Builder, Snapshot
from gateway.trust_config import TrustSettings


def changed(entries: list[Entry], share: float, rng: random.Random, when: int) -> list[Entry]:
    """The entries of an upstream after a sync that changed `share` of them (a new
    description and updatedAt): new Entry objects for those, the same objects for the rest,
    as a sync leaves them."""
    out = list(entries)
    for index in rng.sample(range(len(out)), max(1, int(len(out) * share))):
        entry = out[index]
        server = orjson.loads(entry.server_json)
        server["description"] = f"changed in round {when}"
        meta = orjson.loads(entry.meta_json)
        official = meta.setdefault("io.modelcontextprotocol.registry/official", {})
        moment = entry.updated_at + timedelta(seconds=when + 1)
        official["updatedAt"] = moment.isoformat().replace("+00:00", "Z")
        out[index] = parse_item({"server": server, "_meta": meta}, seen_at=moment)
    return out


@dataclass(frozen=True)
class Rebuilds:
    versions: int
    json_mb: float
    first: float
    full: list[float]
    one_percent: list[float]


def timed(build: Callable[[], Snapshot]) -> float:
    """Seconds a build takes as the gateway spends them: the catalog built is held until the
    clock is read (the gateway serves it; the catalog it replaces is let go after the swap,
    in a thread of its own), so letting a catalog go is not counted."""
    started = time.perf_counter()
    built = build()
    seconds = time.perf_counter() - started
    del built
    return seconds


def rebuilds(per_upstream: int, rounds: int) -> Rebuilds:
    _, json_mb, config, (sources, origins, now) = scenario(per_upstream)
    gc.collect()
    builder = Builder(config)
    first = timed(partial(builder.build, sources, origins, now))
    full: list[float] = []
    one_percent: list[float] = []
    rng = random.Random(per_upstream)
    for attempt in range(rounds):
        gc.collect()
        fresh = Builder(config)  # nothing kept: every view decides every entry
        full.append(timed(partial(fresh.build, sources, origins, now)))
        del fresh
        sources = [replace(sources[0], entries=changed(list(sources[0].entries), 0.01, rng,
                                                       attempt)), *sources[1:]]  # fmt: skip
        gc.collect()
        one_percent.append(timed(partial(builder.build, sources, origins, now)))
    return Rebuilds(3 * per_upstream, json_mb, first, full, one_percent)


def refreshes(per_upstream: int, rounds: int) -> Rebuilds:
    """The scenario with an advisory feed (`bench.trust`'s: 23,000 records, 3,000 of them for
    the catalog's npm and PyPI packages) and two rules reading it; each round a full rebuild
    (nothing kept), then a rebuild after a refresh of the feed that changed 1 % of the
    catalog's records (and moved every record's date)."""
    snapshot, json_mb, config, (sources, origins, now) = scenario(per_upstream)
    rules: list[object] = [{"deny": {"malicious": True}}, {"deny": {"severity": ">=critical"}}]
    trusting = config.model_copy(update={
        "policy": PolicySettings.model_validate({**POLICY, "rules": [*rules, *POLICY["rules"]]}),
        "trust": TrustSettings.model_validate(
            {"osv": [{"name": "osv", "file": "x", "ecosystems": ["npm", "pypi"]}]}),
    })  # fmt: skip
    builder = Builder(trusting)
    first_feed = feed(snapshot)
    first = timed(partial(builder.build, sources, origins, now, advisories=first_feed))
    full: list[float] = []
    one_percent: list[float] = []
    rng = random.Random(per_upstream)
    for attempt in range(rounds):
        advisories = feed(snapshot, frozenset(rng.sample(range(3000), 30)), attempt + 1)
        gc.collect()
        fresh = Builder(trusting)  # as a refresh was before: every version's packages read
        full.append(timed(partial(fresh.build, sources, origins, now, advisories=advisories)))
        del fresh
        gc.collect()
        one_percent.append(
            timed(partial(builder.build, sources, origins, now, advisories=advisories))
        )
    return Rebuilds(3 * per_upstream, json_mb, first, full, one_percent)


def served(per_upstream: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="gateway-scale-") as directory:
        work = Path(directory)
        with gateway(per_upstream, work) as (base, pid, json_mb, _, ready):
            status = orjson.loads(fetch(f"{base}/admin/status"))
            ready_rss = peak_rss_mb(pid)
            started = time.perf_counter()
            pages = walk_every_view(base)
            walk = time.perf_counter() - started
            return {"json_mb": json_mb, "ready": ready, "build_ms": status["snapshotBuildMs"],
                    "ready_rss": ready_rss, "peak_rss": peak_rss_mb(pid), "pages": pages,
                    "walk": walk}  # fmt: skip


def table(
    measure: Callable[[int, int], Rebuilds], sizes: list[int], rounds: int, *columns: str
) -> None:
    """One row per size: the first build, full rebuilds, rebuilds in part, their ratio."""
    size, rebuilt, ratio = columns
    print(f"| versions | {size} | first build | full rebuild | {rebuilt} | {ratio} |")
    print("|---|---|---|---|---|---|")
    for per_upstream in sizes:
        found = measure(per_upstream, rounds)
        full, one = found.full, found.one_percent
        print(f"| {found.versions:,} | {found.json_mb:.0f} MB | {found.first:.2f} s "
              f"| {spread(full)} | {spread(one)} "
              f"| {statistics.median(one) / statistics.median(full):.2f}x |", flush=True)  # fmt: skip
        gc.collect()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def main(argv: list[str]) -> None:
    with_served = "--served" in argv
    argv = [one for one in argv if one != "--served"]
    sizes = [int(one) for one in argv[0].split(",")] if argv else [66_667, 200_000, 333_334]
    rounds = int(argv[1]) if len(argv) > 1 else 3
    print(f"compiled build: {compiled()}; rounds: {rounds}")
    table(rebuilds, sizes, rounds, "upstream JSON", "rebuild after 1 %", "1 % / full")
    print("targets at 1M versions: rebuild after 1 % < 1 s, full rebuild < 6 s")
    print(
        "\nWith an advisory feed and two rules reading it; the rebuild after a refresh of the"
        " feed that changed 1 % of the catalog's records, against a full rebuild with it:"
    )
    table(refreshes, sizes, rounds, "upstream JSON", "rebuild after the refresh", "refresh / full")
    if not with_served:
        return
    print(
        "\n| versions | compact JSON | start to ready | first build | RSS when ready "
        "| peak RSS, every page served | peak / JSON | every page of every view |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for per_upstream in sizes:
        row = served(per_upstream)
        print(f"| {3 * per_upstream:,} | {row['json_mb']:.0f} MB | {row['ready']:.1f} s "
              f"| {row['build_ms'] / 1000:.2f} s | {row['ready_rss']:.0f} MB "
              f"| {row['peak_rss']:.0f} MB | {row['peak_rss'] / row['json_mb']:.2f}x "
              f"| {row['pages']:,} in {row['walk']:.1f} s |", flush=True)  # fmt: skip
    print("target: peak RSS < 4x the compact JSON")


if __name__ == "__main__":
    main(sys.argv[1:])
