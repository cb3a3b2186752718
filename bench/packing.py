"""The snapshot as one buffer, in-process: the benchmark's scenario (3 upstreams, the 20-rule
policy, 3 views, mirrors) built once, then packed, written, mapped and checked, in rounds.

    python -m bench.packing [versions per upstream, default 66667] [rounds, default 3]

Prints the buffer's size against the item JSON it holds, the time to pack (each round makes
every rewrite the build left deferred, and lets it go after), and the time to open it from a
mapped file
(digest and bounds checks), and checks 3,000 items per view read back byte for byte.
"""

from __future__ import annotations

import mmap
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.generate import generate
from bench.scenario import MIRRORS, POLICY, PREFIXES, VIEWS
from gateway import compiled
from gateway.catalog import Origin
from gateway.config import (
    FederationConfig,
    GatewaySettings,
    MirrorSettings,
    PolicySettings,
    ViewSettings,
)
from gateway.entry import parse_item
from gateway.merge import Source
from gateway.pack import pack
from gateway.packed import Packed
from gateway.snapshot import Builder, Snapshot


def scenario(
    per_upstream: int,
) -> tuple[Snapshot, float, FederationConfig, tuple[list[Source], dict[str, Origin], datetime]]:
    """The scenario's snapshot, the MB of upstream JSON it was built from, its config, and
    what it was built from (sources, origins, the time)."""
    now = datetime.now(UTC)
    sources: list[Source] = []
    origins: dict[str, Origin] = {}
    size = 0
    for index, prefix in enumerate(PREFIXES):
        entries = [parse_item(item, seen_at=now)
                   for item in generate(per_upstream, seed=index + 1, prefix=prefix)]  # fmt: skip
        size += sum(len(entry.server_json) for entry in entries)
        sources.append(Source(f"u{index}", entries))
        origins[f"u{index}"] = Origin(f"u{index}", now)
    config = FederationConfig(
        directory=Path("."),
        gateway=GatewaySettings.model_validate(
            {"upstreams": [{"name": f"u{i}", "file": "x"} for i in range(len(PREFIXES))]}
        ),
        policy=PolicySettings.model_validate(POLICY),
        mirrors=MirrorSettings.model_validate(MIRRORS),
        views={name: ViewSettings.model_validate(view) for name, view in VIEWS.items()},
    )
    return Builder(config).build(sources, origins, now), size / 1e6, config, (sources, origins, now)


def main(argv: list[str]) -> None:
    per_upstream = int(argv[0]) if argv else 66_667
    rounds = int(argv[1]) if len(argv) > 1 else 3
    snapshot, json_mb, _, _ = scenario(per_upstream)
    items = {name: len(view.every.items) for name, view in snapshot.views.items()}
    print(f"compiled build: {compiled()}; items per view: {items}; upstream JSON {json_mb:.1f} MB")
    packs, opens = [], []
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "snapshot.bin"
        for attempt in range(rounds):
            started = time.perf_counter()
            buffer = pack(snapshot)
            packs.append(time.perf_counter() - started)
            path.write_bytes(buffer)
            del buffer
            started = time.perf_counter()
            with (
                path.open("rb") as file,
                mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
                Packed(memoryview(mapped), str(path)) as packed,
            ):
                opens.append(time.perf_counter() - started)
                rng = random.Random(attempt)
                for name, catalog in snapshot.views.items():
                    every = catalog.every.items
                    for row in rng.sample(range(len(every)), min(3000, len(every))):
                        assert packed.views[name].body(row) == catalog.body(every[row]), name
        size = path.stat().st_size / 1e6
    served = sum(len(v.body(item)) for v in snapshot.views.values() for item in v.every.items)
    print(f"buffer {size:.1f} MB for {served / 1e6:.0f} MB of item JSON")
    print("pack s, by round (each makes the deferred rewrites):",
          ", ".join(f"{t:.2f}" for t in packs))  # fmt: skip
    print("open from a mapped file and check, s:", ", ".join(f"{t:.2f}" for t in opens))


if __name__ == "__main__":
    main(sys.argv[1:])
