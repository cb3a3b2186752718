"""One identity per name: look-alikes get past no owner, no rule, no include/exclude.

The classes under test are the spellings of a name (case, a namespace's trailing dots, runs of
separators after the slash) and name globs; the properties hold for any of them.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.accounts import explain_server
from gateway.app import REFRESHER
from gateway.loader import load_config
from gateway.names import glob_pattern, identity, matches_any
from tests.conftest import examples
from tests.fakes import server_entry
from tests.test_federation import all_entries, keys, upstream

NS = "com.example.mcp-gateway"


@pytest.mark.parametrize(
    ("name", "folded"),
    [
        ("io.github.acme/tool", "io.github.acme/tool"),
        ("IO.GITHUB.ACME/Tool", "io.github.acme/tool"),
        ("com.example./foo", "com.example/foo"),
        ("com.example../foo", "com.example/foo"),
        ("com.example/foo_bar", "com.example/foo-bar"),
        ("com.example/foo.-_bar", "com.example/foo-bar"),
        ("com.ex-ample/a", "com.ex-ample/a"),  # the namespace keeps its separators
        ("com.ex--ample/a", "com.ex--ample/a"),
    ],
)
def test_identity(name: str, folded: str) -> None:
    assert identity(name) == folded
    assert identity(folded) == folded


def test_an_already_folded_name_is_its_own_identity() -> None:
    name = "io.github.acme/tool"
    assert identity(name) is name  # shared, not copied: 200k names stay 200k strings


namespaces = st.text(alphabet="aAbB.-", min_size=1, max_size=6)
rests = st.text(alphabet="aAbB._-", min_size=1, max_size=6)
names = st.builds(lambda a, b: f"{a}/{b}", namespaces, rests)
glob_parts = st.sampled_from(
    [*"aAbB._-*?/", "[._]", "[!a]", "[a-]", "[!._-]", "[.]", "[A-B]", "[/_]", "[!/]", "[/]"]
)
globs = st.lists(glob_parts, min_size=1, max_size=8).map("".join)


@settings(max_examples=examples(1000), deadline=None)
@given(names, globs)
def test_a_glob_matches_every_name_it_matched_byte_for_byte(name: str, glob: str) -> None:
    if fnmatchcase(name, glob):
        assert matches_any(name, [glob]), (name, glob, identity(name), glob_pattern(glob))


@settings(max_examples=examples(1000), deadline=None)
@given(names, globs, st.data())
def test_every_spelling_of_a_name_gets_the_same_answer(name: str, glob: str, data: Any) -> None:
    namespace, _, rest = name.partition("/")
    respelled = "".join(c.swapcase() if data.draw(st.booleans()) else c for c in namespace)
    respelled += "." * data.draw(st.integers(0, 2)) + "/"
    for char in rest:
        if char in "._-":
            respelled += data.draw(st.sampled_from(["_", ".", "-", "__", "-._"]))
        else:
            respelled += char.swapcase() if data.draw(st.booleans()) else char
    assert identity(respelled) == identity(name)
    assert matches_any(respelled, [glob]) == matches_any(name, [glob])


@settings(max_examples=examples(1000), deadline=None)
@given(names, globs)
def test_the_literal_a_glob_promises_is_in_every_identity_it_matches(name: str, glob: str) -> None:
    if matches_any(name, [glob]):
        assert glob_pattern(glob)[1] in identity(name)


@pytest.mark.parametrize(
    ("glob", "name", "expected"),
    [
        ("io.github.evil/*", "IO.GITHUB.EVIL/x", True),
        ("com.example/*", "com.example./foo", True),
        ("com.example/my_tool", "COM.Example/My.Tool", True),
        ("com.example/my-*-tool", "com.example/my--tool", True),
        ("com.example/my-*-tool", "com.example/mytool", False),
        ("com.example/*", "com.example-x/foo", False),
        # `io.github./x` (a trailing dot) is a spelling of `io.github/x` the glob matches:
        # every spelling of a name gets the same answer.
        ("io.github.*/*", "io.github/x", True),
        ("io.github.*/*", "io.githubx/x", False),
        ("*", "anything.at/all", True),
        ("*_evil", "io.x/my-EVIL", True),
        ("io.*.evil*", "io.foo.evil/x", True),
        ("io.github.evil*[/_]payload", "io.github.evil/my_payload", True),  # `/` in a bracket
        ("*?[/_!]", "a/-__", True),
    ],
)
def test_glob_examples(glob: str, name: str, expected: bool) -> None:
    assert matches_any(name, [glob]) is expected


async def test_lookalikes_through_the_gateway(
    registries: Any, make_config: Any, serve: Any
) -> None:
    """What an attacker publishing to a lower upstream tries, end to end."""
    internal = await registries([server_entry("io.github.acme/tool", "1.0.0")])
    official = await registries(
        [
            server_entry("IO.GITHUB.ACME/Tool", "9.0.0"),  # look-alikes of internal's name
            server_entry("io.github.acme/TOOL", "9.0.0"),
            server_entry("COM.EXAMPLE/foo", "1.0.0"),  # look-alikes of a reserved name
            server_entry("com.Example/foo", "1.0.0"),
            server_entry("com.example./foo", "1.0.0"),
            server_entry("IO.GITHUB.EVIL/x", "1.0.0"),  # denied by name, whatever the case
            server_entry("io.github.twins/a_b", "1.0.0"),  # two look-alikes, one upstream
            server_entry("io.github.twins/a-b", "2.0.0"),
            server_entry("io.github.fine/ok", "1.0.0"),
        ]
    )
    official.raw_items.append(server_entry("io.github.acme/tool\n", "9.9.9"))  # `$` anchors
    config = make_config(
        upstreams=[
            upstream("internal", internal.url, owns=["com.example/*"]),
            upstream("official", official.url),
        ]
    )
    (config.directory / "policy.yaml").write_text(
        "default: allow\nrules:\n  - deny: {name: 'io.github.evil/*'}\n", encoding="utf-8"
    )
    client = await serve(load_config(config.directory))
    served = keys(await all_entries(client))
    assert served == [
        ("io.github.acme/tool", "1.0.0"),
        ("io.github.fine/ok", "1.0.0"),
        ("io.github.twins/a-b", "2.0.0"),
        ("io.github.twins/a_b", "1.0.0"),
    ]
    # Lookups stay exact: the name returned is the name asked for; a look-alike is a 404.
    found = await client.get("/v0.1/servers/io.github.acme%2Ftool/versions/latest")
    assert (await found.json())["server"]["name"] == "io.github.acme/tool"
    for spelled in (
        "IO.GITHUB.ACME%2FTool",
        "io.github.acme%2Ftool%0A",
        "io.github.acme%2Ftool%0a",
    ):
        missing = await client.get(f"/v0.1/servers/{spelled}/versions")
        assert missing.status == 404, spelled
    twin = await client.get("/v0.1/servers/io.github.twins%2Fa_b/versions/latest")
    assert (await twin.json())["server"]["name"] == "io.github.twins/a_b"

    refresher = client.app[REFRESHER]
    report = explain_server(refresher, "io.github.acme/tool", None).to_json()
    shadowed = [v for v in report["versions"] if "shadowedBy" in v]
    assert sorted(v["name"] for v in shadowed) == ["IO.GITHUB.ACME/Tool", "io.github.acme/TOOL"]
    assert {v["why"] for v in shadowed} == {
        "a look-alike of 'io.github.acme/tool', which upstream 'internal' has"
    }
    reserved = explain_server(refresher, "com.example/foo", None).to_json()
    assert {v["shadowedBy"] for v in reserved["versions"]} == {"internal"}
    assert len(reserved["versions"]) == 3
    twins = explain_server(refresher, "io.github.twins/a-b", None).to_json()
    assert twins["lookalikes"] == ["io.github.twins/a-b", "io.github.twins/a_b"]
