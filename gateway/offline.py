"""Catalogs built from `state_dir` alone, with no upstream call: for explain, diff and export."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from gateway.advisories import read_all
from gateway.catalog import Origin
from gateway.config import FederationConfig
from gateway.entry import newest_update
from gateway.errors import StateError
from gateway.merge import Source
from gateway.names import identity_matches
from gateway.shaping import Lookup, no_lookup
from gateway.snapshot import Snapshot, build_snapshot
from gateway.state import load_all


def sources_from_state(
    config: FederationConfig, state_dir: Path | None = None
) -> tuple[list[Source], dict[str, Origin], list[StateError]]:
    """Each configured upstream's saved entries, in precedence order, through its ingest globs.

    `state_dir` defaults to the config's own; diff passes the current config's state to a
    proposed config. A corrupt state file is reported, set aside, and counts as no data.
    """
    upstreams = config.gateway.upstreams
    saved, errors = load_all(state_dir or config.gateway.state_dir, [u.name for u in upstreams])
    sources, origins = [], {}
    for upstream in upstreams:
        data = saved.get(upstream.name)
        entries = [
            entry
            for entry in (data.entries if data else [])
            if identity_matches(entry.identity, upstream.include)
            and not identity_matches(entry.identity, upstream.exclude)
        ]
        sources.append(Source(upstream.name, entries, upstream.owns))
        origins[upstream.name] = Origin(upstream.name, newest_update(entries))
    return sources, origins, errors


def snapshot_from_state(
    config: FederationConfig,
    state_dir: Path | None = None,
    now: datetime | None = None,
    lookup: Lookup = no_lookup,
) -> tuple[Snapshot, list[StateError | str]]:
    """The config's catalog on the saved data, with what its advisory feeds say (read now)
    and what `lookup` knows of its mirrors; and what could not be read."""
    sources, origins, errors = sources_from_state(config, state_dir)
    advisories, unread = read_all(config.trust, state_dir or config.gateway.state_dir)
    snapshot = build_snapshot(config, sources, origins, now or datetime.now(UTC),
                              lookup, advisories)  # fmt: skip
    return snapshot, [*errors, *unread]
