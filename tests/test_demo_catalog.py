"""The bundled offline demo, served by the real app: schema-valid data and the promised coverage.

Every served `server` object is validated against the released server.json schema its `$schema`
URL names, read from `../shared/mcp-registry-ref/` (the module is skipped when that is absent).
The one tolerated deviation is real-data's `"repository": {}`, which every released schema rejects
(Repository requires `url` and `source`): such entries are validated with the empty repository
removed, and a separate assertion proves that was the only thing wrong with them.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from jsonschema import FormatChecker
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from gateway.app import REFRESHER, create_app
from gateway.cli import DEMO_CONFIG
from gateway.config import FederationConfig
from gateway.loader import load_config
from tests.conftest import GatewayServer

SHARED = Path(__file__).resolve().parents[2] / "shared"
SCHEMAS = SHARED / "mcp-registry-ref"
if not (SCHEMAS / "2025-12-11.json").is_file():
    pytest.skip(
        f"the reference schemas are not there ({SCHEMAS} is absent): "
        "these tests read ../shared/mcp-registry-ref/<date>.json",
        allow_module_level=True,
    )

OFFICIAL = "io.modelcontextprotocol.registry/official"
GATEWAY_META = "com.example.mcp-gateway"
CURRENT_SCHEMA_DATE = "2025-12-11"
SCHEMA_URL = re.compile(
    r"^https://static\.modelcontextprotocol\.io/schemas/(\d{4}-\d{2}-\d{2})/server\.schema\.json$"
)
PACKAGE_TYPES = {"npm", "pypi", "oci", "nuget", "mcpb", "cargo"}
LARGE_ENTRY_BYTES = 50_000  # "entries of 50+ KB" (contract, section 4)
MAX_PAGES = 50
READY_TIMEOUT = 20.0

# RFC 3986, character level: a scheme, then only unreserved, reserved and %XX characters.
_URI = re.compile(
    r"^[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*$"
)


def format_checker() -> FormatChecker:
    """jsonschema's FormatChecker, with a `uri` check when the optional rfc3987 is not installed.

    `uri` is the only format the server.json schemas use; without a checker for it the
    FormatChecker would silently accept any string there.
    """
    checker = FormatChecker()
    if "uri" not in checker.checkers:

        @checker.checks("uri")
        def is_uri(value: object) -> bool:
            return not isinstance(value, str) or _URI.match(value) is not None

    return checker


FORMATS = format_checker()
_validators: dict[str, Validator] = {}


def schema_validator(schema_url: str) -> Validator:
    """The validator for a `$schema` URL, from the shared copy of that released schema."""
    match = SCHEMA_URL.match(schema_url)
    assert match, f"$schema {schema_url!r} is not a released server.json schema URL"
    date = match.group(1)
    if date not in _validators:
        path = SCHEMAS / f"{date}.json"
        assert path.is_file(), f"$schema {schema_url!r} names {path.name}, not in {SCHEMAS}"
        schema = json.loads(path.read_text(encoding="utf-8"))
        cls = validator_for(schema)
        cls.check_schema(schema)
        _validators[date] = cls(schema, format_checker=FORMATS)
    return _validators[date]


def schema_date(server: Mapping[str, Any]) -> str:
    match = SCHEMA_URL.match(server["$schema"])
    assert match, server["$schema"]
    return match.group(1)


def describe(errors: Iterable[jsonschema.ValidationError]) -> str:
    return "; ".join(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )


def demo_config(state_dir: Path) -> FederationConfig:
    config = load_config(DEMO_CONFIG)
    gateway = config.gateway.model_copy(update={"state_dir": state_dir})
    return config.model_copy(update={"gateway": gateway})


@pytest.fixture
async def demo(aiohttp_client: Any, tmp_path: Path) -> Any:
    """The real app on the bundled demo config, its catalog loaded."""
    app = create_app(demo_config(tmp_path))
    client = await aiohttp_client(GatewayServer(app))
    async with asyncio.timeout(READY_TIMEOUT):
        await app[REFRESHER].wait_ready()
    ready = await client.get("/readyz")
    assert ready.status == 200
    return client


async def walk(client: Any, **params: str) -> list[dict[str, Any]]:
    """Every entry of a list walk with limit=100, following nextCursor."""
    entries: list[dict[str, Any]] = []
    query: dict[str, str] = {"limit": "100", **params}
    for _ in range(MAX_PAGES):
        response = await client.get("/v0.1/servers", params=query)
        assert response.status == 200, await response.text()
        page = await response.json()
        assert page["metadata"]["count"] == len(page["servers"]) <= 100
        entries.extend(page["servers"])
        cursor = page["metadata"].get("nextCursor")
        if cursor is None:
            break
        query = {**query, "cursor": cursor}
    else:
        pytest.fail(f"the walk did not end within {MAX_PAGES} pages")
    keys = [(e["server"]["name"], e["server"]["version"]) for e in entries]
    assert len(keys) == len(set(keys)), "the walk repeated an entry"
    return entries


def without_empty_repository(server: Mapping[str, Any]) -> dict[str, Any]:
    """The server object with a `"repository": {}` removed (and nothing else changed)."""
    copied = copy.deepcopy(dict(server))
    if copied.get("repository") == {}:
        del copied["repository"]
    return copied


async def test_every_served_server_conforms_to_its_declared_schema(demo: Any) -> None:
    entries = await walk(demo, include_deleted="true")
    assert entries
    failures: list[str] = []
    for entry in entries:
        server = entry["server"]
        validator = schema_validator(server["$schema"])
        errors = sorted(
            validator.iter_errors(without_empty_repository(server)),
            key=lambda e: [str(part) for part in e.absolute_path],
        )
        if errors:
            failures.append(f"{server['name']}@{server['version']}: {describe(errors)}")
    assert not failures, "\n".join(failures)


async def test_empty_repository_is_the_only_tolerated_deviation(demo: Any) -> None:
    """Entries with `repository: {}` differ from valid data in exactly that empty object."""
    entries = await walk(demo, include_deleted="true")
    quirky = [e["server"] for e in entries if e["server"].get("repository") == {}]
    assert quirky, "the demo should contain a real-data `repository: {}` entry"
    for server in quirky:
        stripped = without_empty_repository(server)
        assert set(server) - set(stripped) == {"repository"}
        assert {k: v for k, v in server.items() if k != "repository"} == stripped
        # The schema does reject the empty object, and only there: the tolerance is needed, and
        # it hides nothing else.
        errors = list(schema_validator(server["$schema"]).iter_errors(server))
        assert errors, f"{server['name']}: the schema unexpectedly accepts repository: {{}}"
        assert all(tuple(e.absolute_path)[:1] == ("repository",) for e in errors), describe(errors)
    # Non-empty repositories are never altered by the tolerance.
    for entry in entries:
        repository = entry["server"].get("repository")
        if repository not in (None, {}):
            assert without_empty_repository(entry["server"]) == entry["server"]


def restore_originals(entry: dict[str, Any]) -> dict[str, Any]:
    """The served server object with each rewritten package location put back as recorded in
    the gateway's `_meta` (`packages[].original`; None there means the field was absent)."""
    server = copy.deepcopy(entry["server"])
    recorded = entry["_meta"][GATEWAY_META].get("packages", [])
    for package, meta in zip(server.get("packages", []), recorded, strict=True):
        for field, value in (meta.get("original") or {}).items():
            if value is None:
                package.pop(field, None)
            else:
                package[field] = value
    return server


async def test_served_entries_are_the_bundled_entries_field_for_field(demo: Any) -> None:
    """What the demo serves comes from the bundled file: policy may leave entries out and the
    demo mirrors rewrite package locations, but with the locations recorded in the gateway's
    `_meta` put back, a served `server` object is the upstream's, field for field (key order
    aside for rewritten packages); the official `_meta` is the upstream's except `isLatest`."""
    bundled = json.loads((DEMO_CONFIG / "catalog.json").read_text(encoding="utf-8"))["servers"]
    expected = {(e["server"]["name"], e["server"]["version"]): e for e in bundled}
    served = {
        (e["server"]["name"], e["server"]["version"]): e
        for e in await walk(demo, include_deleted="true")
    }
    assert served.keys() <= expected.keys(), served.keys() - expected.keys()
    for key, entry in served.items():
        assert restore_originals(entry) == expected[key]["server"], key
        rewritten = [m for m in entry["_meta"][GATEWAY_META].get("packages", []) if "original" in m]
        assert all(m["registryType"] for m in rewritten)
        official = {k: v for k, v in entry["_meta"][OFFICIAL].items() if k != "isLatest"}
        original = {k: v for k, v in expected[key]["_meta"][OFFICIAL].items() if k != "isLatest"}
        assert official == original, key


async def test_demo_covers_what_the_product_promises(demo: Any) -> None:
    listed = await walk(demo)
    every = await walk(demo, include_deleted="true")
    servers = [e["server"] for e in every]

    assert len(listed) >= 30, f"only {len(listed)} entries are listed"

    registry_types = {p["registryType"] for s in servers for p in s.get("packages", [])}
    assert registry_types >= PACKAGE_TYPES, PACKAGE_TYPES - registry_types

    remote_only = [s["name"] for s in servers if s.get("remotes") and not s.get("packages")]
    assert remote_only, "no remote-only server"

    versions = Counter(s["name"] for s in servers)
    name, count = versions.most_common(1)[0]
    assert count >= 3, f"no server has 3 versions (most: {name} with {count})"
    response = await demo.get(f"/v0.1/servers/{name.replace('/', '%2F')}/versions")
    assert response.status == 200
    assert (await response.json())["metadata"]["count"] >= 3

    listed_statuses = {e["_meta"][OFFICIAL]["status"] for e in listed}
    every_statuses = {e["_meta"][OFFICIAL]["status"] for e in every}
    assert "deprecated" in listed_statuses
    assert "deleted" in every_statuses
    assert "deleted" not in listed_statuses, "deleted entries leak into the default list"
    deleted = [e for e in every if e["_meta"][OFFICIAL]["status"] == "deleted"]
    assert len(every) == len(listed) + len(deleted)

    assert any(s.get("repository") == {} for s in servers), "no `repository: {}` entry"

    old_dates = {schema_date(s) for s in servers} - {CURRENT_SCHEMA_DATE}
    assert len(old_dates) >= 2, f"old $schema dates: {sorted(old_dates)}"

    # The demo mirrors rewrite OCI references; the quirks live on in the recorded originals.
    oci = [
        p["identifier"]
        for e in every
        for p in restore_originals(e).get("packages", [])
        if p["registryType"] == "oci"
    ]
    assert any(not has_registry_host(i) for i in oci), f"every OCI identifier has a host: {oci}"
    assert any(oci_tag(i) == "latest" for i in oci), f"no OCI :latest tag: {oci}"

    sizes = {f"{e['server']['name']}@{e['server']['version']}": len(orjson.dumps(e)) for e in every}
    biggest = max(sizes, key=sizes.__getitem__)
    assert sizes[biggest] > LARGE_ENTRY_BYTES, f"largest entry {biggest}: {sizes[biggest]} bytes"


async def test_every_entry_carries_official_and_gateway_meta(demo: Any) -> None:
    entries = await walk(demo, include_deleted="true")
    for entry in entries:
        label = f"{entry['server']['name']}@{entry['server']['version']}"
        meta = entry.get("_meta")
        assert isinstance(meta, dict), label
        assert isinstance(meta.get(OFFICIAL), dict), label
        assert meta[OFFICIAL]["status"] in {"active", "deprecated", "deleted"}, label
        assert isinstance(meta[OFFICIAL]["isLatest"], bool), label
        assert isinstance(meta.get(GATEWAY_META), dict), label
        assert meta[GATEWAY_META]["upstream"] == "demo", label
        # The gateway's data sits under its own key, never inside the official one.
        assert not set(meta[OFFICIAL]) & {"upstream", "syncedAt", "stale"}, label


def has_registry_host(identifier: str) -> bool:
    """Docker's rule: the first path component names a registry if it has `.` or `:`, or is
    `localhost`; otherwise the reference means docker.io."""
    first, slash, _ = identifier.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


def oci_tag(identifier: str) -> str | None:
    """The tag of an image reference (`None` for a digest or no tag)."""
    if "@" in identifier:
        return None
    last = identifier.rsplit("/", 1)[-1]
    return last.partition(":")[2] or None


@pytest.mark.parametrize(
    ("identifier", "host", "tag"),
    [
        ("ghcr.io/acme/weather:1.2.0", True, "1.2.0"),
        ("acme/weather:latest", False, "latest"),
        ("weather", False, None),
        ("localhost:5000/acme/weather:1.0", True, "1.0"),
        ("ghcr.io/acme/weather@sha256:00", True, None),
    ],
)
def test_oci_reference_helpers(identifier: str, host: bool, tag: str | None) -> None:
    assert has_registry_host(identifier) is host
    assert oci_tag(identifier) == tag


def test_uri_format_is_checked() -> None:
    """The FormatChecker really rejects a non-URI (so the `uri` formats above are enforced)."""
    assert FORMATS.conforms("https://github.com/acme/weather", "uri")
    assert not FORMATS.conforms("not a uri", "uri")
    assert not FORMATS.conforms("github.com/acme/weather", "uri")
