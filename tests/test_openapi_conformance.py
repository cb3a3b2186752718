"""The read API against the official OpenAPI spec, with schemathesis, on a real loopback server.

The spec is read from `../shared/mcp-registry-ref/openapi.yaml` (the module is skipped when that
is absent) and amended in memory only, for the two documented differences between the spec and
what the live registry (and real data) do:

(a) error bodies: the spec documents `{"error": ...}`, the live registry sends RFC 9457
    problem+json; every non-2xx answer of the read operations is documented as a problem body
    instead (and undocumented error statuses, such as 400 and 422 on the list, get the same
    shape as their `default`), so error answers are checked too, against the shape clients see;
(b) `Repository` must accept `{}` (about 10 % of production entries): its `required` list is
    dropped.

Nothing else is relaxed: `ServerDetail` (description <= 100 characters, name pattern, ...) and
the official `_meta` (no extra keys) hold for the demo data as the spec states them.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from gateway.app import REFRESHER, create_app
from gateway.cli import DEMO_CONFIG
from gateway.config import FederationConfig
from gateway.loader import load_config
from gateway.serve import Serving
from tests.conftest import examples

SHARED = Path(__file__).resolve().parents[2] / "shared"
OPENAPI = SHARED / "mcp-registry-ref" / "openapi.yaml"
if not OPENAPI.is_file():
    pytest.skip(
        f"the official OpenAPI spec is not there ({OPENAPI} is absent): "
        "these tests read ../shared/mcp-registry-ref/openapi.yaml",
        allow_module_level=True,
    )

import schemathesis  # noqa: E402  (only worth importing when the spec is there)
from schemathesis import Case, CheckContext, Response  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

LIST = "/v0.1/servers"
VERSIONS = "/v0.1/servers/{serverName}/versions"
VERSION = "/v0.1/servers/{serverName}/versions/{version}"
READ_PATHS = (LIST, VERSIONS, VERSION)
OFFICIAL = "io.modelcontextprotocol.registry/official"
PROBLEM_JSON = "application/problem+json"
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["title", "status", "detail"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "minLength": 1},
    },
}
START_TIMEOUT = 20.0


def amended_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of the official spec with exactly the documented exceptions (a) and (b)."""
    spec = copy.deepcopy(raw)
    repository = spec["components"]["schemas"]["Repository"]
    assert repository["required"] == ["url", "source"], "the spec changed: review exception (b)"
    del repository["required"]
    problem = {"content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}}
    for path in READ_PATHS:
        responses = spec["paths"][path]["get"]["responses"]
        for status, response in responses.items():
            if not status.startswith("2"):
                response.update(copy.deepcopy(problem))
        responses["default"] = {"description": "RFC 9457 problem body", **copy.deepcopy(problem)}
    return spec


RAW_SPEC: dict[str, Any] = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
schema = schemathesis.openapi.from_dict(amended_spec(RAW_SPEC)).include(
    method="GET", path=list(READ_PATHS)
)

# Real names and versions of the bundled demo, mixed into generated path parameters so that
# fuzzing reaches the 2xx answers of the versions endpoints too, not only their 404s.
_BUNDLED = json.loads((DEMO_CONFIG / "catalog.json").read_text(encoding="utf-8"))["servers"]
DEMO_KEYS = sorted({(e["server"]["name"], e["server"]["version"]) for e in _BUNDLED})
DEMO_NAMES = sorted({name for name, _ in DEMO_KEYS})


@schema.hook
def before_generate_path_parameters(
    context: schemathesis.HookContext, strategy: st.SearchStrategy[dict[str, Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    operation = context.operation
    if operation is None:
        return strategy
    if operation.path == VERSIONS:
        real = st.sampled_from(DEMO_NAMES).map(lambda name: {"serverName": name})
    elif operation.path == VERSION:
        keys = DEMO_KEYS + [(name, "latest") for name in DEMO_NAMES]
        real = st.sampled_from(keys).map(lambda key: {"serverName": key[0], "version": key[1]})
    else:
        return strategy
    return st.one_of(strategy, real)


def problem_status_matches(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """An error answer is a problem+json body whose `status` is the HTTP status."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith(PROBLEM_JSON), f"error answer is {content_type!r}"
    body = json.loads(response.content)
    assert body.get("status") == response.status_code, body
    return None


CHECKS = [not_a_server_error, response_schema_conformance, problem_status_matches]


class GatewayThread(threading.Thread):
    """The real app on 127.0.0.1, port 0, in its own event loop in a background thread."""

    def __init__(self, config: FederationConfig) -> None:
        super().__init__(name="gateway-under-test", daemon=True)
        self.config = config
        self.started = threading.Event()
        self.base_url = ""
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self.error = exc
        finally:
            self.started.set()

    async def _serve(self) -> None:
        app = create_app(self.config)
        serving = await Serving.start(app, "127.0.0.1", 0)
        try:
            await asyncio.wait_for(app[REFRESHER].wait_ready(), START_TIMEOUT)
            self.base_url = f"http://127.0.0.1:{serving.port}"
            self._loop = asyncio.get_running_loop()
            self._stop_event = asyncio.Event()
            self.started.set()
            await self._stop_event.wait()
        finally:
            await serving.stop()

    def stop(self) -> None:
        if self._loop is not None and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self.join(timeout=START_TIMEOUT)
        assert not self.is_alive(), "the gateway thread did not stop"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = load_config(DEMO_CONFIG)
    state_dir = tmp_path_factory.mktemp("demo-state")
    gateway = config.gateway.model_copy(update={"state_dir": state_dir, "access_log": False})
    thread = GatewayThread(config.model_copy(update={"gateway": gateway}))
    thread.start()
    assert thread.started.wait(START_TIMEOUT), "the gateway did not start"
    if thread.error is not None:
        raise thread.error
    try:
        ready = requests.get(f"{thread.base_url}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        yield thread.base_url
    finally:
        thread.stop()
    assert thread.error is None, thread.error


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@schema.parametrize()
@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_read_api_conforms_to_the_official_spec(
    case: Case[Any], base_url: str, http: requests.Session
) -> None:
    case.call_and_validate(base_url=base_url, session=http, checks=CHECKS)


def test_the_spec_is_amended_only_as_documented() -> None:
    """The in-memory spec differs from the shared file only in exceptions (a) and (b)."""
    amended = amended_spec(RAW_SPEC)
    assert "required" not in amended["components"]["schemas"]["Repository"]
    amended["components"]["schemas"]["Repository"]["required"] = ["url", "source"]
    for path in READ_PATHS:
        responses = amended["paths"][path]["get"]["responses"]
        assert responses.pop("default")["content"] == {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}
        original = RAW_SPEC["paths"][path]["get"]["responses"]
        assert responses.keys() == original.keys()
        for status in original:
            if not status.startswith("2"):
                assert responses[status]["content"] == {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}
                responses[status] = original[status]
    assert amended == RAW_SPEC
    # The parts that must hold for the demo data are untouched.
    detail = amended["components"]["schemas"]["ServerDetail"]
    assert detail["properties"]["description"]["maxLength"] == 100
    assert detail["required"] == ["name", "description", "version"]


def real_entries(base_url: str, http: requests.Session) -> list[dict[str, Any]]:
    """Every entry the demo lists with include_deleted=true, walking all pages."""
    entries: list[dict[str, Any]] = []
    params: dict[str, str] = {"limit": "100", "include_deleted": "true"}
    for _ in range(20):
        page = http.get(f"{base_url}{LIST}", params=params, timeout=10)
        assert page.status_code == 200, page.text
        body = page.json()
        entries.extend(body["servers"])
        cursor = body["metadata"].get("nextCursor")
        if cursor is None:
            return entries
        params["cursor"] = cursor
    pytest.fail("the list walk did not end")


def call(
    path: str,
    base_url: str,
    http: requests.Session,
    query: dict[str, str] | None = None,
    **path_parameters: str,
) -> tuple[Case[Any], Response]:
    """One explicit request to a read operation, validated against the amended spec."""
    operation = schema[path]["GET"]
    encoded = {key: quote(value, safe="") for key, value in path_parameters.items()}
    case = operation.Case(path_parameters=encoded, query=query)
    response = case.call(base_url=base_url, session=http)
    case.validate_response(response, checks=CHECKS)
    return case, response


def test_real_names_and_versions_conform(base_url: str, http: requests.Session) -> None:
    """For every server of the demo: versions, versions/latest and each versions/{version}."""
    entries = real_entries(base_url, http)
    active: dict[str, list[str]] = {}
    for entry in entries:
        if entry["_meta"][OFFICIAL]["status"] != "deleted":
            active.setdefault(entry["server"]["name"], []).append(entry["server"]["version"])
    assert len(active) >= 10, sorted(active)
    for name, versions in sorted(active.items()):
        _, listed = call(VERSIONS, base_url, http, serverName=name)
        assert listed.status_code == 200, (name, listed.text)
        served = [item["server"] for item in listed.json()["servers"]]
        assert {s["name"] for s in served} == {name}
        assert sorted(s["version"] for s in served) == sorted(versions)

        _, latest = call(VERSION, base_url, http, serverName=name, version="latest")
        assert latest.status_code == 200, (name, latest.text)
        body = latest.json()
        assert body["server"]["name"] == name
        assert body["_meta"][OFFICIAL]["isLatest"] is True
        assert body["server"]["version"] in versions

        for version in versions:
            _, one = call(VERSION, base_url, http, serverName=name, version=version)
            assert one.status_code == 200, (name, version, one.text)
            assert one.json()["server"]["name"] == name
            assert one.json()["server"]["version"] == version


def test_unknown_names_are_problem_404s(base_url: str, http: requests.Session) -> None:
    """Unknown names are 404 problem bodies, checked as the fuzzer checks error answers."""
    _, missing = call(VERSION, base_url, http, serverName="io.example/nothing", version="latest")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "Server not found"
    _, versions = call(VERSIONS, base_url, http, serverName="io.example/nothing")
    assert versions.status_code == 404


@pytest.mark.parametrize(
    "limit",
    # Python ints are unbounded; JSON encoders are not (orjson stops at 64 bits).
    ["0", "101", "9223372036854775808", "18446744073709551616", "-9223372036854775809"],
)
def test_out_of_range_limit_is_a_422_problem(
    base_url: str, http: requests.Session, limit: str
) -> None:
    """An out-of-range limit is a 422 problem body, never a 500, however large it is."""
    _, response = call(LIST, base_url, http, query={"limit": limit})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["location"] == "query.limit"
