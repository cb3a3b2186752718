"""The mcpb digest join: the bytes a view's mirror serves for an mcpb package against the
entry's `fileSha256`, learned from a checksum header the mirror sends or from a bounded
download hashed as it streams; decided on by `digest` rules and said in the served `_meta`
(with the method used), `explain` and the server page. A mirror on loopback serves a file
of each kind."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from gateway.loader import load_config
from gateway.mcpb_trust import checksum
from tests.conftest import file_upstream, loopback
from tests.fakes import server_entry
from tests.test_federation import all_entries, keys
from tests.trusted import TOKEN, explained, start_gateway, write_yaml

SERVER = "io.github.acme/bundle"
LIMIT = 4096  # trust.yaml's max_mcpb_bytes in these tests


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@dataclass
class Bundle:
    """A file the mirror serves, what the entry says of it, and how the mirror answers."""

    data: bytes
    named: str | None  # the entry's fileSha256 (None: the entry names none)
    headers: dict[str, str] = field(default_factory=dict)  # on HEAD (and GET)
    head: int = 200  # HEAD's status (405: the mirror refuses HEAD)
    only_when_asked: bool = False  # S3: its checksum header only with x-amz-checksum-mode


def bundles() -> dict[str, Bundle]:
    """Versions of the server, one file each (see the test names)."""
    good = b"an mcpb bundle, version 1.0.0"
    swapped = b"other bytes than the publisher's"
    return {
        "1.0.0": Bundle(good, sha(good)),  # no header: downloaded
        "1.1.0": Bundle(b"v1.1", sha(b"v1.1"), {"X-Checksum-Sha256": sha(b"v1.1").upper()}),
        "1.2.0": Bundle(swapped, sha(b"what the publisher built")),  # the mirror's bytes differ
        # the mirror's own checksum says other bytes (its word is taken: invalid)
        "1.3.0": Bundle(b"v1.3", sha(b"v1.3"), {"X-Checksum-Sha256": sha(b"tampered")}),
        "1.4.0": Bundle(b"x" * (LIMIT + 1), sha(b"x" * (LIMIT + 1))),  # over max_mcpb_bytes
        "1.5.0": Bundle(b"v1.5", None),  # the entry names no fileSha256
        "1.6.0": Bundle(
            b"v1.6", sha(b"v1.6"), {"x-amz-checksum-sha256": b64(b"v1.6")}, only_when_asked=True
        ),
        "1.7.0": Bundle(b"v1.7", sha(b"v1.7"), {"Repr-Digest": f"sha-256=:{b64(b'v1.7')}:"}),
        "1.8.0": Bundle(b"v1.8", sha(b"v1.8"), head=405),  # HEAD refused: downloaded
    }


@dataclass
class McpbMirror:
    files: dict[str, Bundle] = field(default_factory=bundles)
    url: str = ""
    down: bool = False
    asked: list[tuple[str, str]] = field(default_factory=list)  # (method, path)

    def app(self) -> web.Application:
        async def serve(request: web.Request) -> web.StreamResponse:
            self.asked.append((request.method, request.path))
            if self.down:
                return web.Response(status=503)
            version = request.match_info["version"]
            found = self.files.get(version)
            if found is None:
                return web.Response(status=404)
            headers = dict(found.headers)
            if found.only_when_asked and request.headers.get("x-amz-checksum-mode") != "ENABLED":
                headers = {}
            if request.method == "HEAD":
                if found.head != 200:
                    return web.Response(status=found.head)
                return web.Response(headers={**headers, "Content-Length": str(len(found.data))})
            return web.Response(body=found.data, headers=headers)

        app = web.Application()
        app.router.add_route("*", "/gh/acme/bundle/releases/download/{version}/bundle.mcpb", serve)
        return app


@pytest.fixture
async def mcpb_mirror() -> AsyncIterator[McpbMirror]:
    mirror = McpbMirror()
    async with loopback(mirror.app()) as url:
        mirror.url = url
        yield mirror


def entries() -> list[dict[str, Any]]:
    made = []
    for index, (version, bundle) in enumerate(bundles().items()):
        package: dict[str, Any] = {
            "registryType": "mcpb",
            "identifier": f"https://github.com/acme/bundle/releases/download/{version}/bundle.mcpb",
            "version": version,
            "transport": {"type": "stdio"},
        }
        if bundle.named is not None:
            package["fileSha256"] = bundle.named
        made.append(server_entry(SERVER, version, published=f"2026-03-0{index + 1}T00:00:00Z",
                                 packages=[package]))  # fmt: skip
    return made


async def start(tmp_path: Path, make_config: Any, serve: Any, mirror: McpbMirror) -> Any:
    return await start_gateway(
        tmp_path, make_config, serve, entries(),
        trust={"mcpb": True, "max_mcpb_bytes": LIMIT},
        mirrors={"mcpb": {"https://github.com/": f"{mirror.url}/gh/"}},
        deny={"digest": "invalid"}, view=("strict", {"digest": "verified"}),
    )  # fmt: skip


@pytest.fixture
async def gateway(tmp_path: Path, make_config: Any, serve: Any, mcpb_mirror: McpbMirror) -> Any:
    return await start(tmp_path, make_config, serve, mcpb_mirror)


def versions_of(served: list[tuple[str, str]]) -> set[str]:
    return {version for name, version in served if name == SERVER}


async def test_other_bytes_are_hidden_and_only_joined_ones_in_the_strict_view(
    gateway: Any,
) -> None:
    assert versions_of(keys(await all_entries(gateway))) == set(bundles()) - {"1.2.0", "1.3.0"}
    strict = versions_of(keys(await all_entries(gateway, "/views/strict")))
    assert strict == {"1.0.0", "1.1.0", "1.6.0", "1.7.0", "1.8.0"}


@pytest.mark.parametrize(
    ("version", "state", "method", "why"),
    [
        ("1.0.0", "verified", f"download of {len(b'an mcpb bundle, version 1.0.0')} bytes",
         "the mirror's bytes are the entry's"),
        ("1.1.0", "verified", "checksum header X-Checksum-Sha256", "the entry's"),
        ("1.2.0", "invalid", "download of 32 bytes", "not the entry's fileSha256"),
        ("1.3.0", "invalid", "checksum header X-Checksum-Sha256", f"sha256:{sha(b'tampered')}"),
        ("1.4.0", "unknown", None, f"larger than max_mcpb_bytes ({LIMIT} bytes)"),
        ("1.5.0", "absent", "download of 4 bytes", "names no fileSha256"),
        ("1.6.0", "verified", "checksum header x-amz-checksum-sha256", "the entry's"),
        ("1.7.0", "verified", "checksum header Repr-Digest", "the entry's"),
        ("1.8.0", "verified", "download of 4 bytes", "the entry's"),
    ],
)  # fmt: skip
async def test_each_file_is_joined_and_says_how(
    gateway: Any, version: str, state: str, method: str | None, why: str
) -> None:
    views = await explained(gateway, SERVER, version)
    default = views["default"]
    if state == "invalid":  # policy.yaml's rule hid it, and says what it read
        assert default["served"] is False
        assert default["signals"][0].startswith("digest invalid")
        assert any(why in line for line in default["signals"])
        return
    [package] = default["packages"]
    digest = package["signals"]["digest"]
    assert digest["state"] == state
    assert why in digest["why"]
    assert digest.get("method") == method
    if state == "verified":
        assert digest["value"] == f"sha256:{sha(bundles()[version].data)}"
    assert views["strict"]["served"] is (state == "verified")


async def test_a_checksum_header_spares_the_download(gateway: Any, mcpb_mirror: McpbMirror) -> None:
    asked = {(method, path.split("/")[-2]) for method, path in mcpb_mirror.asked}
    assert ("GET", "1.1.0") not in asked
    assert ("HEAD", "1.1.0") in asked
    assert ("GET", "1.0.0") in asked  # no header: downloaded
    served = await gateway.get(f"/v0.1/servers/{SERVER.replace('/', '%2F')}/versions/1.1.0")
    [package] = (await served.json())["server"]["packages"]
    assert package["identifier"].startswith(mcpb_mirror.url)  # the mirror's location is served


async def test_with_the_mirror_down_nothing_is_hidden_but_what_a_rule_asks(
    tmp_path: Path, make_config: Any, serve: Any, mcpb_mirror: McpbMirror
) -> None:
    mcpb_mirror.down = True
    client = await start(tmp_path, make_config, serve, mcpb_mirror)
    assert versions_of(keys(await all_entries(client))) == set(bundles())  # unknown: not invalid
    assert versions_of(keys(await all_entries(client, "/views/strict"))) == set()
    views = await explained(client, SERVER, "1.2.0")
    [package] = views["default"]["packages"]
    assert package["signals"]["digest"]["state"] == "unknown"


async def test_the_server_page_says_the_digest_hid_a_version(gateway: Any) -> None:
    import re

    markup = await (await gateway.get(f"/server/{SERVER}")).text()
    row = next(
        r for r in re.findall(r"<tr>.*?</tr>", markup) if '<td data-label="Version">1.2.0</td>' in r
    )
    assert "hidden: denied" in row
    assert "digest invalid" in row


def test_check_refuses_a_digest_rule_with_the_join_off(tmp_path: Path, make_config: Any) -> None:
    from gateway.errors import ConfigError

    config = make_config(upstreams=[file_upstream(tmp_path / "d", "u", entries())])
    write_yaml(config.directory / "policy.yaml", {"rules": [{"deny": {"digest": "invalid"}}]})
    with pytest.raises(ConfigError, match=r"rules\[0\]\.deny\.digest.*mcpb: true"):
        load_config(config.directory)


@pytest.mark.parametrize(
    ("headers", "found"),
    [
        ({"X-Checksum-Sha256": "AB" * 32}, ("ab" * 32, "X-Checksum-Sha256")),
        ({"X-Checksum-Sha256": "ab" * 31}, None),  # too short
        ({"x-amz-checksum-sha256": b64(b"s3")}, (sha(b"s3"), "x-amz-checksum-sha256")),
        ({"x-amz-checksum-sha256": b64(b"s3") + "-3"}, None),  # a multipart composite
        ({"Repr-Digest": f"sha-512=:AA==:, sha-256=:{b64(b'r')}:"}, (sha(b"r"), "Repr-Digest")),
        ({"Repr-Digest": f"sha-256={b64(b'r')}"}, None),  # not a byte sequence
        ({"Digest": f"SHA-256={b64(b'd')}"}, (sha(b"d"), "Digest")),
        ({"Digest": "SHA-256=not base64!"}, None),
        ({"Digest": "MD5=AAAA"}, None),
    ],
)
def test_checksum_headers_are_read_exactly(
    headers: dict[str, str], found: tuple[str, str] | None
) -> None:
    from multidict import CIMultiDict

    assert checksum(CIMultiDict(headers)) == found


@given(st.dictionaries(
    st.sampled_from(["X-Checksum-Sha256", "x-amz-checksum-sha256", "Repr-Digest", "Digest"]),
    st.text(max_size=120),
))  # fmt: skip
def test_any_checksum_header_reads_as_a_sha256_or_nothing(headers: dict[str, str]) -> None:
    from multidict import CIMultiDict

    found = checksum(CIMultiDict(headers))
    assert found is None or (len(found[0]) == 64 and found[0] == found[0].lower())


async def test_status_and_metrics_count_served_versions_by_digest_state(gateway: Any) -> None:
    status = await (await gateway.get("/admin/status", headers=TOKEN)).json()
    views = {view["name"]: view for view in status["views"]}
    # 1.2.0 and 1.3.0 are hidden (invalid); of the served: five joined, one too large, one
    # with no fileSha256; every version counts once per signal the view collects
    assert views["default"]["signals"]["digest"] == {"verified": 5, "unknown": 1, "absent": 1}
    assert views["strict"]["signals"]["digest"] == {"verified": 5}
    metrics = await (await gateway.get("/metrics")).text()
    assert (
        'mcp_gateway_view_signal_versions{signal="digest",state="verified",view="default"} 5.0'
        in metrics
    )


def test_a_digest_of_encoded_bytes_is_not_the_files() -> None:
    from multidict import CIMultiDict

    headers = CIMultiDict({"Repr-Digest": f"sha-256=:{b64(b'gz')}:", "Content-Encoding": "gzip"})
    assert checksum(headers) is None
