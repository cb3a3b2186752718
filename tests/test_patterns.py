"""Whole values are matched whole: no pattern under gateway/ validates with a trailing `$`.

In Python, `$` also matches before a final newline, so `^...$` with `re.match` accepts
`"io.github.acme/tool\\n"`. Patterns that check a whole value are used with `fullmatch`.
"""

from __future__ import annotations

import ast
import importlib
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "gateway").rglob("*.py"))


def _ends_with_dollar(text: str) -> bool:
    stripped = text.rstrip()
    return stripped.endswith("$") and not stripped.endswith("\\$")


def _dollar_patterns(path: Path, root: Path = REPO) -> list[str]:
    """String literals (f-strings too) ending with an unescaped `$`, and where they are."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: dict[int, str] = {}
    for node in ast.walk(tree):
        parts = node.values if isinstance(node, ast.JoinedStr) else [node]
        last = parts[-1] if parts else None
        text = last.value if isinstance(last, ast.Constant) else None
        if isinstance(text, str) and _ends_with_dollar(text):
            found[node.lineno] = f"{path.relative_to(root)}:{node.lineno}: {text[-40:]!r}"
    return [found[line] for line in sorted(found)]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_pattern_validates_with_a_trailing_dollar(path: Path) -> None:
    assert _dollar_patterns(path) == []


def test_the_check_finds_a_dollar_pattern(tmp_path: Path) -> None:
    planted = tmp_path / "gateway" / "planted.py"
    planted.parent.mkdir()
    planted.write_text('import re\nNAME = re.compile(r"^[a-z]+$")\nX = f"^{NAME}$"\n')
    found = [line.split(": ", 1)[0] for line in _dollar_patterns(planted, tmp_path)]
    assert found == ["gateway/planted.py:2", "gateway/planted.py:3"]


@pytest.mark.parametrize(
    "module", sorted(p.stem for p in (REPO / "gateway").glob("*.py") if p.stem != "__main__")
)
def test_no_compiled_pattern_ends_with_a_dollar(module: str) -> None:
    loaded = importlib.import_module(f"gateway.{module}")
    for name, value in vars(loaded).items():
        if isinstance(value, re.Pattern):
            assert not _ends_with_dollar(str(value.pattern)), f"gateway.{module}.{name}"


# -- seen from outside: a value and the same value with a final newline -----------------------

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\x00"])
def test_entries_refuse_names_versions_and_timestamps_with_a_final_newline(suffix: str) -> None:
    from gateway.entry import parse_item, parse_timestamp
    from gateway.errors import EntryRejected

    parse_item({"name": "io.github.acme/tool", "version": "1.0.0"}, seen_at=NOW)
    for server in (
        {"name": "io.github.acme/tool" + suffix, "version": "1.0.0"},
        {"name": "io.github.acme/tool", "version": "1.0.0" + suffix},
    ):
        with pytest.raises(EntryRejected):
            parse_item(server, seen_at=NOW)
    with pytest.raises(ValueError, match="not an RFC 3339"):
        parse_timestamp("2026-01-01T00:00:00Z" + suffix)


def test_query_values_are_checked_whole() -> None:
    from gateway.errors import ValidationFailed
    from gateway.query import parse_limit

    assert parse_limit("5") == 5
    with pytest.raises(ValidationFailed):
        parse_limit("5\n")


def test_oci_paths_and_semver_are_checked_whole() -> None:
    from gateway.registries.oci import OciReference
    from gateway.semver import VersionRange, semver_key

    assert OciReference.parse("ghcr.io/acme/tool:1.0.0") is not None
    assert OciReference.parse("ghcr.io/acme/tool\n:1.0.0") is None
    assert semver_key("1.0.0") is not None
    assert semver_key("1.0.0\n") is None
    with pytest.raises(ValueError, match="not a version range"):
        VersionRange(">=1.0.0\n,<2")


def test_view_file_names_are_checked_whole(tmp_path: Path) -> None:
    from gateway.errors import ConfigError
    from gateway.loader import load_config

    (tmp_path / "gateway.yaml").write_text("upstreams: [{name: u, file: x.json}]\n")
    (tmp_path / "views").mkdir()
    (tmp_path / "views" / "pay\n.yaml").write_text("default: deny\n")
    with pytest.raises(ConfigError, match="cannot be a URL segment"):
        load_config(tmp_path)


def test_request_ids_are_checked_whole() -> None:
    from gateway.app import _request_id

    assert _request_id("abc-1") == "abc-1"
    assert _request_id("abc-1\n") != "abc-1\n"
