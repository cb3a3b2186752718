"""Publishers' security-scan receipts (`_meta["io.modelcontextprotocol.registry/security-scan"]`,
the registry's proposed extension): passed through untouched, and counted for `scan` rules only
when a receipt is over the bytes the view's mirror serves (the digest the gateway reads there)
and fresh. Through the gateway with mcpb packages on a loopback mirror (their digest is the
digest join's), and `signals.scanned` on its own, exactly and fuzzed."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.receipts import SCAN_KEY, integrity_digests, scanned
from gateway.signals import Digest, Signals
from tests.conftest import loopback
from tests.fakes import server_entry
from tests.test_federation import all_entries, keys
from tests.test_mcpb_digest import Bundle, McpbMirror
from tests.trusted import explained, start_gateway

SERVER = "io.github.acme/scanned"
NOW = datetime.now(UTC).replace(microsecond=0)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def receipt(
    data: bytes, verdict: str, *, expires: timedelta = timedelta(days=30)
) -> dict[str, Any]:
    return {
        "scanner": "example-scanner",
        "scanner_version": "1.2.3",
        "scanned_artifact_ref": "bundle.mcpb",
        "scanned_artifact_digest": f"sha256:{sha(data)}",
        "scan_scope": ["package"],
        "verdict": verdict,
        "scanned_at": stamp(NOW - timedelta(days=1)),
        "freshness_expires_at": stamp(NOW + expires),
        "attestation": "publisher-asserted",
    }


def released() -> dict[str, tuple[bytes, list[dict[str, Any]], str]]:
    """Each version's bytes at the mirror, its receipts, and the `scan` state expected."""
    return {
        "1.0.0": (b"v1.0", [receipt(b"v1.0", "clean")], "clean"),
        "1.1.0": (
            b"v1.1",
            [receipt(b"v1.1", "clean"), receipt(b"v1.1", "findings")],
            "findings",
        ),
        "1.2.0": (b"v1.2", [receipt(b"what was scanned elsewhere", "clean")], "absent"),
        "1.3.0": (b"v1.3", [receipt(b"v1.3", "clean", expires=timedelta(days=-1))], "absent"),
        "1.4.0": (b"v1.4", [], "absent"),
        "1.5.0": (b"v1.5", [receipt(b"v1.5", "inconclusive")], "inconclusive"),
    }


def entries() -> list[dict[str, Any]]:
    made = []
    for index, (version, (data, listed, _)) in enumerate(released().items()):
        package = {
            "registryType": "mcpb",
            "identifier": f"https://github.com/acme/bundle/releases/download/{version}/bundle.mcpb",
            "version": version,
            "fileSha256": sha(data),
            "transport": {"type": "stdio"},
        }
        extra = {"_meta": {SCAN_KEY: listed}} if listed else {}
        made.append(server_entry(SERVER, version, published=f"2026-03-0{index + 1}T00:00:00Z",
                                 packages=[package], **extra))  # fmt: skip
    return made


@pytest.fixture
async def mirror() -> AsyncIterator[McpbMirror]:
    made = McpbMirror({v: Bundle(data, sha(data)) for v, (data, _, _) in released().items()})
    async with loopback(made.app()) as url:
        made.url = url
        yield made


@pytest.fixture
async def gateway(tmp_path: Path, make_config: Any, serve: Any, mirror: McpbMirror) -> Any:
    return await start_gateway(
        tmp_path, make_config, serve, entries(),
        trust={"mcpb": True, "scan_receipts": True},
        mirrors={"mcpb": {"https://github.com/": f"{mirror.url}/gh/"}},
        deny={"scan": "findings"}, view=("scanned", {"scan": "clean"}),
    )  # fmt: skip


def versions_of(served: list[tuple[str, str]]) -> set[str]:
    return {version for name, version in served if name == SERVER}


async def test_receipts_over_the_mirrors_bytes_decide_and_others_do_not_count(
    gateway: Any,
) -> None:
    expected = {v: state for v, (_, _, state) in released().items()}
    served = versions_of(keys(await all_entries(gateway)))
    assert served == {v for v, state in expected.items() if state != "findings"}
    scanned_view = versions_of(keys(await all_entries(gateway, "/views/scanned")))
    assert scanned_view == {v for v, state in expected.items() if state == "clean"}
    for version, state in expected.items():
        default = (await explained(gateway, SERVER, version))["default"]
        if state == "findings":
            assert default["signals"][0].startswith("scan findings"), version
            continue
        [package] = default["packages"]
        assert package["signals"]["scan"]["state"] == state, version


async def test_receipts_pass_through_untouched(gateway: Any) -> None:
    upstream = {e["server"]["version"]: e["server"]["_meta"][SCAN_KEY]
                for e in entries() if "_meta" in e["server"]}  # fmt: skip
    for version in ("1.0.0", "1.2.0", "1.3.0"):
        answer = await gateway.get(f"/v0.1/servers/{SERVER.replace('/', '%2F')}/versions/{version}")
        body = orjson.loads(await answer.read())
        assert body["server"]["_meta"][SCAN_KEY] == upstream[version]
    answer = await gateway.get(f"/v0.1/servers/{SERVER.replace('/', '%2F')}/versions/1.0.0")
    [package] = (await answer.json())["_meta"]["com.example.mcp-gateway"]["packages"]
    assert package["signals"]["scan"]["receipts"] == [
        f"example-scanner 1.2.3 (publisher-asserted): clean until {stamp(NOW + timedelta(days=30))}"
    ]


# -- signals.scanned on its own -------------------------------------------------------------

MIRROR = Signals("m", None, None, None, NOW, Digest("present", "x", f"sha256:{sha(b'a')}"),
                 digests=(f"sha256:{sha(b'a')}",))  # fmt: skip


@pytest.mark.parametrize(
    ("given", "state", "why"),
    [
        ([receipt(b"a", "clean")], "clean", "1 receipt(s)"),
        ([receipt(b"a", "warnings"), receipt(b"a", "clean")], "warnings", "the worst warnings"),
        (
            [{**receipt(b"a", "clean"), "scanned_artifact_digest": f"SHA256:{sha(b'a').upper()}"}],
            "clean",
            "1 receipt(s)",
        ),
        ([{**receipt(b"a", "clean"), "verdict": "great"}], "absent", "1 over other bytes"),
        ([{**receipt(b"a", "clean"), "freshness_expires_at": None}], "absent", "1 not fresh"),
        (
            [{**receipt(b"a", "clean"), "scanned_at": stamp(NOW + timedelta(days=1))}],
            "absent",
            "1 not fresh",
        ),
        (
            [{**receipt(b"a", "clean"), "scanned_artifact_digest": "sha256:abc"}],
            "absent",
            "malformed",
        ),
        ([], "absent", "no scan receipt"),
    ],
)
def test_a_receipt_counts_only_over_the_mirrors_bytes_and_fresh(
    given: list[dict[str, Any]], state: str, why: str
) -> None:
    found = scanned(MIRROR, given, NOW)
    assert found.state == state
    assert why in found.why


def test_a_mirror_that_could_not_tell_its_digest_is_unknown() -> None:
    down = Signals("m", None, None, None, NOW, Digest("unknown", "down"))
    assert scanned(down, [receipt(b"a", "clean")], NOW).state == "unknown"


def test_npm_integrity_reads_as_the_digests_receipts_name() -> None:
    import base64

    raw = hashlib.sha512(b"tarball").digest()
    integrity = "sha512-" + base64.b64encode(raw).decode()
    assert integrity_digests(integrity) == (f"sha512:{raw.hex()}",)
    assert integrity_digests("sha1-AAAA md5-BBBB") == ()
    assert integrity_digests("sha512-not base64!") == ()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                      children, max_size=4),
    max_leaves=20,
)  # fmt: skip


@given(st.lists(st.dictionaries(
    st.sampled_from(["scanned_artifact_digest", "verdict", "scanned_at", "freshness_expires_at",
                     "scanner", "attestation"]), JSON), max_size=5))  # fmt: skip
def test_any_receipts_read_as_a_scan_state(given: list[dict[str, Any]]) -> None:
    found = scanned(MIRROR, given, NOW)
    assert found.state in ("clean", "warnings", "findings", "inconclusive", "absent")


def test_npm_binds_receipts_only_to_the_one_sha512_it_checks() -> None:
    import base64

    sha512 = "sha512-" + base64.b64encode(hashlib.sha512(b"tarball").digest()).decode()
    sha256 = "sha256-" + base64.b64encode(hashlib.sha256(b"scanned").digest()).decode()
    other = "sha512-" + base64.b64encode(hashlib.sha512(b"other").digest()).decode()
    assert integrity_digests(f"{sha256} {sha512}") == integrity_digests(sha512)  # npm: sha512
    assert integrity_digests(f"{sha512} {other}") == ()  # two: either could be installed


def test_every_file_of_a_version_needs_a_receipt_that_counts() -> None:
    wheel, sdist = f"sha256:{sha(b'wheel')}", f"sha256:{sha(b'sdist')}"
    files = Signals("m", None, None, None, NOW, digests=(wheel, sdist))
    one = scanned(files, [receipt(b"wheel", "clean")], NOW)
    assert one.state == "absent"
    assert "1 of the mirror's 2 digest(s)" in one.why
    both = scanned(files, [receipt(b"wheel", "clean"), receipt(b"sdist", "warnings")], NOW)
    assert both.state == "warnings"


def test_a_mirror_that_could_not_be_asked_is_unknown_whatever_was_collected() -> None:
    from gateway.signals import unknown

    down = unknown("m", "the mirror: HTTP 503", NOW, False, False)  # npm read for digests alone
    assert scanned(down, [receipt(b"a", "clean")], NOW).state == "unknown"
