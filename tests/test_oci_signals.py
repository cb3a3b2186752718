"""OCI signatures, provenance and SBOMs through the gateway, read at each view's own registry
mirror: a registry on loopback with the referrers API (`tests/oci_images.FakeOciRegistry`),
images pushed with what cosign and oras attach (Sigstore bundles made by the test's own
signing setup over the real manifest digests, a legacy cosign signature, a Notation
signature, an SBOM). The same images on a real distribution registry, which has no referrers
API, are in `test_real_oci_signals.py`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import loopback
from tests.fakes import server_entry
from tests.oci_images import REPO, FakeOciRegistry, Scenario, push_all
from tests.test_federation import all_entries, keys
from tests.test_signals import OTHER_CA, SETUP
from tests.trusted import ROOT, explained, start_gateway

SERVER = "io.github.acme/tool"
REPOSITORY = {"url": "https://github.com/acme/tool", "source": "github"}


def entries(versions: list[str]) -> list[dict[str, Any]]:
    made = []
    for index, version in enumerate(versions):
        package = {"registryType": "oci", "identifier": f"ghcr.io/{REPO}:{version}",
                   "transport": {"type": "stdio"}}  # fmt: skip
        made.append(server_entry(SERVER, version, published=f"2026-03-0{index + 1}T00:00:00Z",
                                 packages=[package], repository=REPOSITORY))  # fmt: skip
    return made


async def start(tmp_path: Path, make_config: Any, serve: Any, host: str, scenario: Scenario) -> Any:
    return await start_gateway(
        tmp_path, make_config, serve, entries(list(scenario.expected)),
        trust={"oci": {"trusted_root": ROOT}}, mirrors={"oci": {"ghcr.io": host}},
        deny={"signature": "invalid"}, view=("signed", {"signature": "verified"}), setup=SETUP,
    )  # fmt: skip


def versions_of(served: list[tuple[str, str]]) -> set[str]:
    return {version for name, version in served if name == SERVER}


async def check_every_version(client: Any, scenario: Scenario) -> None:
    """What a registry holding `push_all`'s images gives each version, in every view."""
    expected = scenario.expected
    served = versions_of(keys(await all_entries(client)))
    assert served == {v for v, (signature, _) in expected.items() if signature != "invalid"}
    signed = versions_of(keys(await all_entries(client, "/views/signed")))
    assert signed == {v for v, (signature, _) in expected.items() if signature == "verified"}
    for version, (signature, provenance) in expected.items():
        views = await explained(client, SERVER, version)
        default = views["default"]
        if signature == "invalid":
            assert default["served"] is False, version
            assert default["signals"][0].startswith("signature invalid"), version
            continue
        [package] = default["packages"]
        signals = package["signals"]
        assert signals["integrity"] == scenario.digests[version], version
        assert (signals["signature"]["state"], signals["provenance"]["state"]) == (
            signature, provenance), version  # fmt: skip


@pytest.fixture
async def registry() -> AsyncIterator[tuple[FakeOciRegistry, str, Scenario]]:
    fake = FakeOciRegistry()
    scenario = push_all(fake, SETUP, OTHER_CA)
    async with loopback(fake.app()) as url:
        yield fake, url.removeprefix("http://"), scenario


async def test_each_image_gets_its_signature_and_provenance_through_the_referrers_api(
    registry: tuple[FakeOciRegistry, str, Scenario],
    tmp_path: Path, make_config: Any, serve: Any,
) -> None:  # fmt: skip
    fake, host, scenario = registry
    client = await start(tmp_path, make_config, serve, host, scenario)
    await check_every_version(client, scenario)
    asked = fake.asked
    assert any("/referrers/" in path for path in asked)
    tags = [p for p in asked if "/manifests/sha256-" in p and not p.endswith((".sig", ".att",
                                                                             ".sbom"))]  # fmt: skip
    assert tags == []  # the API answered: the referrers tag is not asked


async def test_served_entries_say_who_signed_what_and_list_the_sbom(
    registry: tuple[FakeOciRegistry, str, Scenario],
    tmp_path: Path, make_config: Any, serve: Any,
) -> None:  # fmt: skip
    _, host, scenario = registry
    client = await start(tmp_path, make_config, serve, host, scenario)
    served = await client.get(f"/v0.1/servers/{SERVER.replace('/', '%2F')}/versions/1.0.0")
    body = await served.json()
    [package] = body["_meta"]["com.example.mcp-gateway"]["packages"]
    signals = package["signals"]
    assert signals["signature"]["repository"] == "https://github.com/acme/tool"
    assert signals["signature"]["why"].startswith("signed by https://github.com/acme/tool over ")
    assert signals["provenance"]["why"].startswith("built by https://github.com/acme/tool")
    assert signals["artifacts"] == ["sbom application/spdx+json"]
    assert body["server"]["packages"][0]["identifier"] == f"{host}/{REPO}:1.0.0"
    views = await explained(client, SERVER, "1.4.0")
    assert any("signed by a workflow of https://github.com/evil/tool, not the server's" in line
               for line in views["default"]["signals"])  # fmt: skip
    views = await explained(client, SERVER, "1.7.0")
    [package] = views["default"]["packages"]
    assert "Notation" in package["signals"]["signature"]["why"]


async def test_with_the_registry_down_nothing_is_hidden_but_what_a_rule_asks(
    registry: tuple[FakeOciRegistry, str, Scenario],
    tmp_path: Path, make_config: Any, serve: Any,
) -> None:  # fmt: skip
    fake, host, scenario = registry
    fake.down = True
    client = await start(tmp_path, make_config, serve, host, scenario)
    assert versions_of(keys(await all_entries(client))) == set(scenario.expected)
    assert versions_of(keys(await all_entries(client, "/views/signed"))) == set()


async def test_an_image_whose_answers_take_too_long_is_unknown(
    registry: tuple[FakeOciRegistry, str, Scenario],
    tmp_path: Path, make_config: Any, serve: Any,
) -> None:  # fmt: skip
    """Each request within `verify.timeout`, all of them together not: one version's signals
    take at most four times it (an image may need some twenty requests in a row)."""
    fake, host, _ = registry
    fake.delay = 0.15
    client = await start_gateway(
        tmp_path, make_config, serve, entries(["1.0.0"]),
        trust={"oci": {"trusted_root": ROOT}},
        mirrors={"oci": {"ghcr.io": host}, "verify": {"timeout": "0.25s"}},
        deny={"signature": "invalid"}, view=("signed", {"signature": "verified"}), setup=SETUP,
    )  # fmt: skip
    [package] = (await explained(client, SERVER, "1.0.0"))["default"]["packages"]
    signature = package["signals"]["signature"]
    assert signature["state"] == "unknown"
    assert "no answer within 1 s" in signature["why"]
