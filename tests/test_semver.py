from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.entry import Entry, parse_item
from gateway.semver import pick_latest, semver_key

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def entry(version: str, day: int) -> Entry:
    moment = BASE + timedelta(days=day)
    return parse_item({"name": "io.github.a/b", "version": version}, seen_at=moment)


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("1.0.0", "1.0.1"),
        ("1.9.0", "1.10.0"),
        ("1.0.0-alpha", "1.0.0"),
        ("1.0.0-alpha", "1.0.0-alpha.1"),
        ("1.0.0-alpha.1", "1.0.0-alpha.beta"),
        ("1.0.0-beta.2", "1.0.0-beta.11"),
        ("1.0.0-rc.1", "1.0.0"),
        ("v1.2.3", "1.2.4"),
        ("0.9.9", "v1.0.0"),
    ],
)
def test_semver_precedence(lower: str, higher: str) -> None:
    low, high = semver_key(lower), semver_key(higher)
    assert low is not None
    assert high is not None
    assert low < high


@pytest.mark.parametrize("version", ["1.0", "2025.06.01", "latest", "1.0.0.0", "01.2.3", ""])
def test_not_semver(version: str) -> None:
    assert semver_key(version) is None


@pytest.mark.parametrize(
    ("versions", "latest"),
    [
        # semver order, whatever the publish order
        ([("1.2.0", 3), ("1.10.0", 1), ("1.9.0", 2)], "1.10.0"),
        # a prerelease is below its release, but can be latest
        ([("1.2.0", 1), ("1.3.0-beta.1", 2)], "1.3.0-beta.1"),
        ([("1.3.0-beta.1", 2), ("1.3.0", 1)], "1.3.0"),
        # neither semver: later publishedAt wins
        ([("2025-10-15", 2), ("2026-02-28", 3), ("2025-06-01", 1)], "2026-02-28"),
        # `2025.10.15` is strict semver and `2026.02.28` is not (leading zero): semver wins
        ([("2025.10.15", 2), ("2026.02.28", 3)], "2025.10.15"),
        # mixed: the semver one wins even when published earlier
        ([("nightly-5", 9), ("0.1.0", 1)], "0.1.0"),
        # equal precedence (build metadata): later publishedAt wins
        ([("1.0.0+b1", 1), ("1.0.0+b2", 2)], "1.0.0+b2"),
    ],
)
def test_pick_latest(versions: list[tuple[str, int]], latest: str) -> None:
    chosen = pick_latest(entry(version, day) for version, day in versions)
    assert chosen is not None
    assert chosen.version == latest


def test_pick_latest_of_nothing() -> None:
    assert pick_latest([]) is None
