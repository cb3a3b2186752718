"""Entries as received: what an upstream's data can and cannot make the gateway keep."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway import entry
from gateway.entry import parse_item

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NPM = {"registryType": "npm", "identifier": "x", "version": "1", "transport": {"type": "stdio"}}


def test_shared_facts_stay_bounded_whatever_upstreams_send() -> None:
    """Equal facts (registry types, transports) are shared between entries; a hostile
    upstream sending a new registry type in every entry cannot grow that table forever."""
    parse_item({"name": "io.x/y", "version": "1.0.0", "packages": [NPM]}, seen_at=NOW)
    for index in range(entry._INTERNED_MAX + 500):
        package = {"registryType": f"type-{index}", "identifier": "x", "version": "1"}
        parse_item({"name": "io.x/y", "version": "1.0.0", "packages": [package]}, seen_at=NOW)
    assert len(entry._INTERNED) <= entry._INTERNED_MAX
    one = parse_item({"name": "io.x/y", "version": "1.0.0", "packages": [NPM]}, seen_at=NOW)
    two = parse_item({"name": "io.x/z", "version": "2.0.0", "packages": [NPM]}, seen_at=NOW)
    assert one.registry_types is two.registry_types  # facts seen before are still shared
