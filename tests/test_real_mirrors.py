"""Real package mirrors on loopback: Verdaccio (npm) and pypiserver (PyPI).

The gateway rewrites an entry's package to the mirror and asks the mirror whether it has the
version; the real tools (`npm view`, `pip download`) then show that the served entry installs.
Verdaccio comes from the npm registry (`tests/mirrors/package.json`, installed by `.ci/run`),
pypiserver from PyPI (the `test` extra). Nothing here reaches beyond 127.0.0.1: Verdaccio has no
uplinks, pypiserver no fallback, and npm and pip run with throwaway, isolated configuration.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import yaml

from gateway.loader import load_config
from tests.conftest import file_upstream
from tests.fakes import OFFICIAL, server_entry
from tests.trusted import settle

pytestmark = [pytest.mark.mirrors, pytest.mark.slow]

NS = "com.example.mcp-gateway"
MIRRORS_DIR = Path(__file__).resolve().parent / "mirrors"
VERDACCIO = MIRRORS_DIR / "node_modules" / ".bin" / "verdaccio"
NPM_INSTALL = "npm ci --prefix tests/mirrors --no-audit --no-fund"
PIP_INSTALL = ".venv/bin/pip install -e '.[test]'"
STARTUP_TIMEOUT = 30.0  # seconds a mirror may take to answer its first request
TOOL_TIMEOUT = 60.0  # seconds one npm / pip command may take

SERVER = "io.github.acme/weather-mcp"
NPM_PACKAGE = "@acme/weather-mcp"  # scoped: the packument URL carries an encoded slash
CLI_SERVER = "io.github.acme/weather-cli"
NPM_CLI_PACKAGE = "acme-weather-cli"  # unscoped
PYPI_PROJECT = "acme-weather-mcp"
PUBLISHED = "1.2.0"  # on the mirrors
UNPUBLISHED = "9.9.9"  # in the upstream registry, never on the mirrors
_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


# -- tools and processes ------------------------------------------------------------------


def require_tool(path: Path | None, what: str, install: str) -> Path:
    """The tool's path; else fail on CI (which must install it) and skip elsewhere."""
    if path is not None and path.exists():
        return path
    message = f"{what} is not installed; install it with: {install}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (.ci/run must install it before running the tests)")
    pytest.skip(message)


def pypi_server_path() -> Path | None:
    beside = Path(sys.executable).with_name("pypi-server")
    if beside.exists():
        return beside
    found = shutil.which("pypi-server")
    return Path(found) if found else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tool_env(home: Path) -> dict[str, str]:
    """An environment for npm and pip that reads no user, global or machine configuration
    (this machine's pip config adds indexes and find-links) and uses no proxy."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.lower().startswith(("npm_config_", "pip_"))
        and key.lower() not in _PROXY_VARIABLES
    }
    env.update(
        HOME=str(home),
        npm_config_cache=str(home / "npm-cache"),
        npm_config_userconfig=str(home / ".npmrc"),
        npm_config_globalconfig=str(home / "npmrc-global"),
        npm_config_update_notifier="false",
        npm_config_audit="false",
        npm_config_fund="false",
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        PIP_NO_CACHE_DIR="1",
    )
    return env


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return int(response.status) == 200
    except urllib.error.HTTPError as error:  # up, but not ready: close its response
        error.close()
        return False
    except OSError:  # refused, reset, timed out
        return False


def _log_tail(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-3000:]


@contextlib.contextmanager
def running(
    args: list[str], *, env: dict[str, str], cwd: Path, log: Path, ready_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process, wait (bounded) until `ready_url` answers 200, and always stop
    it afterwards. Its output goes to `log`, never to a pipe nobody reads."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
            start_new_session=True,  # its own process group: its children are stopped with it
        )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _answers(ready_url):
            if process.poll() is not None:
                pytest.fail(f"{args[0]} exited with {process.returncode}:\n{_log_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{args[0]} did not answer {ready_url} in time:\n{_log_tail(log)}")
            time.sleep(0.1)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server and every process it started (code-server's extension host, for one)."""
    for signal_number, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal_number)
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # what outlived its parent
        os.killpg(process.pid, signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def run_tool(args: list[str], env: dict[str, str], cwd: Path) -> Ran:
    """Run npm or pip off the event loop (the gateway keeps serving meanwhile)."""
    completed = await asyncio.to_thread(
        subprocess.run,
        args,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    return Ran(completed.returncode, completed.stdout, completed.stderr)


@dataclass(frozen=True, slots=True)
class Mirror:
    url: str  # what mirrors.yaml names: the npm registry root, or the /simple index
    env: dict[str, str]  # for the real tool that installs from it
    work: Path  # a scratch directory for that tool


# -- Verdaccio ----------------------------------------------------------------------------


def verdaccio_config(root: Path) -> Path:
    config = {
        "storage": str(root / "storage"),
        "auth": {"htpasswd": {"file": str(root / "htpasswd"), "max_users": -1}},
        "uplinks": {},  # offline: it serves only what is published to it
        "packages": {"**": {"access": "$all", "publish": "$all", "unpublish": "$all"}},
        "log": {"type": "stdout", "format": "pretty", "level": "warn"},
        "web": {"enable": False},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def npm_publish(
    registry: str, name: str, version: str, directory: Path, env: dict[str, str]
) -> None:
    directory.mkdir(parents=True)
    manifest = {"name": name, "version": version, "description": "A test MCP server."}
    (directory / "package.json").write_bytes(orjson.dumps(manifest))
    (directory / "index.js").write_text("module.exports = {};\n", encoding="utf-8")
    host = registry.removeprefix("http:")
    (directory / ".npmrc").write_text(f"{host}:_authToken=anything\n", encoding="utf-8")
    completed = subprocess.run(
        ["npm", "publish", "--registry", registry],
        cwd=directory,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, f"npm publish failed:\n{completed.stdout}{completed.stderr}"


@pytest.fixture(scope="module")
def verdaccio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    """Verdaccio with @acme/weather-mcp 1.2.0 and acme-weather-cli 1.2.0 published to it."""
    binary = require_tool(VERDACCIO, "Verdaccio (tests/mirrors)", NPM_INSTALL)
    if shutil.which("npm") is None:
        require_tool(None, "npm", "apt-get install nodejs npm")
    root = tmp_path_factory.mktemp("verdaccio")
    env = tool_env(root / "home")
    listen = f"127.0.0.1:{free_port()}"
    url = f"http://{listen}/"
    args = [str(binary), "--config", str(verdaccio_config(root)), "--listen", listen]
    with running(args, env=env, cwd=root, log=root / "verdaccio.log", ready_url=url + "-/ping"):
        npm_publish(url, NPM_PACKAGE, PUBLISHED, root / "publish-mcp", env)
        npm_publish(url, NPM_CLI_PACKAGE, PUBLISHED, root / "publish-cli", env)
        yield Mirror(url, env, root)


# -- pypiserver ---------------------------------------------------------------------------


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(directory: Path, project: str, version: str) -> Path:
    """A valid pure-Python wheel: METADATA, WHEEL and a RECORD with every file's hash."""
    dist = project.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": f'__version__ = "{version}"\n'.encode(),
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n"
            "Summary: A test MCP server.\n"
        ).encode(),
        f"{info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in files.items()]
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


@contextlib.contextmanager
def pypi_server(root: Path) -> Iterator[Mirror]:
    """pypiserver serving a freshly built acme-weather-mcp 1.2.0 wheel, and nothing else."""
    binary = require_tool(pypi_server_path(), "pypiserver", PIP_INSTALL)
    packages = root / "packages"
    build_wheel(packages, PYPI_PROJECT, PUBLISHED)
    port = free_port()
    args = [str(binary), "run", "-i", "127.0.0.1", "-p", str(port)]
    args += ["-a", ".", "-P", ".", "--disable-fallback", str(packages)]
    url = f"http://127.0.0.1:{port}/simple/"
    env = tool_env(root / "home")
    with running(args, env=env, cwd=root, log=root / "pypiserver.log", ready_url=url):
        yield Mirror(url, env, root)


@pytest.fixture(scope="module")
def pypiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    with pypi_server(tmp_path_factory.mktemp("pypiserver")) as mirror:
        yield mirror


# -- the gateway ---------------------------------------------------------------------------


def package(registry_type: str, identifier: str, version: str, base: str | None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "registryType": registry_type,
        "identifier": identifier,
        "version": version,
        "transport": {"type": "stdio"},
    }
    if base is not None:
        found["registryBaseUrl"] = base
    return found


def entry(name: str, version: str, published: str, pkg: dict[str, Any]) -> dict[str, Any]:
    return server_entry(name, version, published=published, packages=[pkg])


def npm_entries() -> list[dict[str, Any]]:
    """The upstream's view: public locations, explicit for one version and implied for the
    other; only 1.2.0 is on the mirror."""
    return [
        entry(
            SERVER,
            PUBLISHED,
            "2026-01-01T00:00:00Z",
            package("npm", NPM_PACKAGE, PUBLISHED, "https://registry.npmjs.org"),
        ),
        entry(
            SERVER,
            UNPUBLISHED,
            "2026-02-01T00:00:00Z",
            package("npm", NPM_PACKAGE, UNPUBLISHED, None),
        ),
        entry(
            CLI_SERVER,
            PUBLISHED,
            "2026-01-01T00:00:00Z",
            package("npm", NPM_CLI_PACKAGE, PUBLISHED, "https://registry.npmjs.org"),
        ),
    ]


def pypi_entries() -> list[dict[str, Any]]:
    """Two spellings of one PyPI project (PEP 503 normalizes both); only 1.2.0 is mirrored."""
    return [
        entry(
            SERVER,
            PUBLISHED,
            "2026-01-01T00:00:00Z",
            package("pypi", "acme_weather_mcp", PUBLISHED, "https://pypi.org"),
        ),
        entry(
            SERVER,
            UNPUBLISHED,
            "2026-02-01T00:00:00Z",
            package("pypi", PYPI_PROJECT, UNPUBLISHED, None),
        ),
    ]


async def start_gateway(
    serve: Any,
    make_config: Any,
    tmp_path: Path,
    items: list[dict[str, Any]],
    mirrors: dict[str, Any],
    name: str = "config",
) -> Any:
    """A gateway over a file upstream and `mirrors.yaml`, its mirror checks run and applied."""
    upstream = file_upstream(tmp_path / f"{name}-data", "upstream", items)
    config = make_config(name, upstreams=[upstream], access_log=False)
    (config.directory / "mirrors.yaml").write_text(yaml.safe_dump(mirrors), encoding="utf-8")
    client = await serve(load_config(config.directory))
    await settle(client)
    return client


async def served(client: Any, name: str, version: str) -> dict[str, Any] | None:
    response = await client.get(f"/v0.1/servers/{quote(name, safe='')}/versions/{version}")
    if response.status == 404:
        return None
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def served_versions(client: Any, name: str) -> list[str]:
    response = await client.get(f"/v0.1/servers/{quote(name, safe='')}/versions")
    assert response.status == 200, await response.text()
    return sorted(e["server"]["version"] for e in (await response.json())["servers"])


def gateway_meta(served_entry: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = served_entry["_meta"][NS]["packages"][0]
    return meta


def checked_at(served_entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(gateway_meta(served_entry)["checkedAt"].replace("Z", "+00:00"))


async def npm_view(mirror: Mirror, pkg: dict[str, Any]) -> Ran:
    """What an IDE's `npx --registry <registryBaseUrl> <identifier>@<version>` resolves."""
    spec = f"{pkg['identifier']}@{pkg['version']}"
    args = ["npm", "view", "--registry", pkg["registryBaseUrl"], spec, "version"]
    return await run_tool(args, mirror.env, mirror.work)


async def pip_download(mirror: Mirror, pkg: dict[str, Any], into: Path) -> Ran:
    """What `pip`/`uvx --index-url <registryBaseUrl> <identifier>==<version>` fetches."""
    args = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir"]
    args += ["--retries", "0", "--timeout", "10", "--index-url", pkg["registryBaseUrl"]]
    args += [f"{pkg['identifier']}=={pkg['version']}", "-d", str(into)]
    return await run_tool(args, mirror.env, mirror.work)


# -- npm: Verdaccio ------------------------------------------------------------------------


async def test_npm_entries_point_at_verdaccio_and_install_with_npm(
    verdaccio: Mirror, serve: Any, make_config: Any, tmp_path: Path
) -> None:
    mirrors = {"npm": verdaccio.url, "verify": {"mode": "annotate", "ttl": "1h"}}
    client = await start_gateway(serve, make_config, tmp_path, npm_entries(), mirrors)

    available = await served(client, SERVER, PUBLISHED)
    missing = await served(client, SERVER, UNPUBLISHED)
    cli = await served(client, CLI_SERVER, PUBLISHED)
    assert available is not None
    assert missing is not None  # annotate only labels
    assert cli is not None
    for served_entry in (available, missing, cli):
        pkg = served_entry["server"]["packages"][0]
        assert pkg["registryBaseUrl"] == verdaccio.url
        assert gateway_meta(served_entry)["checkedAt"]
    assert available["server"]["packages"][0]["identifier"] == NPM_PACKAGE
    assert gateway_meta(available)["original"] == {"registryBaseUrl": "https://registry.npmjs.org"}
    assert gateway_meta(missing)["original"] == {"registryBaseUrl": None}  # the public default
    assert gateway_meta(available)["verification"] == "available"
    assert gateway_meta(cli)["verification"] == "available"
    assert gateway_meta(missing)["verification"] == "missing"
    # Annotating never changes what is latest.
    assert missing["_meta"][OFFICIAL]["isLatest"] is True

    # The real client installs exactly what the gateway says is there, and nothing else.
    for served_entry in (available, cli):
        ran = await npm_view(verdaccio, served_entry["server"]["packages"][0])
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == PUBLISHED
    ran = await npm_view(verdaccio, missing["server"]["packages"][0])
    assert ran.returncode != 0
    assert "E404" in ran.stderr


async def test_enforce_serves_only_what_verdaccio_has(
    verdaccio: Mirror, serve: Any, make_config: Any, tmp_path: Path
) -> None:
    mirrors = {"npm": verdaccio.url, "verify": {"mode": "enforce", "ttl": "1h"}}
    client = await start_gateway(serve, make_config, tmp_path, npm_entries(), mirrors)

    assert await served_versions(client, SERVER) == [PUBLISHED]
    assert await served(client, SERVER, UNPUBLISHED) is None
    latest = await served(client, SERVER, "latest")
    assert latest is not None
    assert latest["server"]["version"] == PUBLISHED  # isLatest moved to what installs
    assert latest["_meta"][OFFICIAL]["isLatest"] is True
    assert gateway_meta(latest)["verification"] == "available"
    ran = await npm_view(verdaccio, latest["server"]["packages"][0])
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == PUBLISHED


# -- PyPI: pypiserver ----------------------------------------------------------------------


async def test_pypi_entries_point_at_pypiserver_and_install_with_pip(
    pypiserver: Mirror, serve: Any, make_config: Any, tmp_path: Path
) -> None:
    mirrors = {"pypi": pypiserver.url, "verify": {"mode": "annotate", "ttl": "1h"}}
    client = await start_gateway(serve, make_config, tmp_path, pypi_entries(), mirrors)

    available = await served(client, SERVER, PUBLISHED)
    missing = await served(client, SERVER, UNPUBLISHED)
    assert available is not None
    assert missing is not None
    for served_entry in (available, missing):
        assert served_entry["server"]["packages"][0]["registryBaseUrl"] == pypiserver.url
    assert gateway_meta(available)["original"] == {"registryBaseUrl": "https://pypi.org"}
    assert gateway_meta(missing)["original"] == {"registryBaseUrl": None}
    # pypiserver answers HTML only (no PEP 691 JSON): the verifier reads its links.
    assert gateway_meta(available)["verification"] == "available"
    assert gateway_meta(missing)["verification"] == "missing"

    downloads = tmp_path / "downloads"
    ran = await pip_download(pypiserver, available["server"]["packages"][0], downloads)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert [p.name for p in downloads.iterdir()] == [
        f"acme_weather_mcp-{PUBLISHED}-py3-none-any.whl"
    ]
    ran = await pip_download(pypiserver, missing["server"]["packages"][0], tmp_path / "none")
    assert ran.returncode != 0
    assert "No matching distribution found" in ran.stderr


async def test_enforce_serves_only_what_pypiserver_has(
    pypiserver: Mirror, serve: Any, make_config: Any, tmp_path: Path
) -> None:
    mirrors = {"pypi": pypiserver.url, "verify": {"mode": "enforce", "ttl": "1h"}}
    client = await start_gateway(serve, make_config, tmp_path, pypi_entries(), mirrors)

    assert await served_versions(client, SERVER) == [PUBLISHED]
    assert await served(client, SERVER, UNPUBLISHED) is None
    latest = await served(client, SERVER, "latest")
    assert latest is not None
    assert latest["server"]["version"] == PUBLISHED
    assert latest["_meta"][OFFICIAL]["isLatest"] is True
    ran = await pip_download(pypiserver, latest["server"]["packages"][0], tmp_path / "latest")
    assert ran.returncode == 0, ran.stdout + ran.stderr


# -- a mirror that does not answer ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["annotate", "enforce"])
async def test_unreachable_mirror_is_unknown_never_missing(
    mode: str, serve: Any, make_config: Any, tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there any more
    pypi = [
        entry(
            "io.github.acme/weather-py",
            version,
            published,
            package("pypi", PYPI_PROJECT, version, None),
        )
        for version, published in (
            (PUBLISHED, "2026-01-01T00:00:00Z"),
            (UNPUBLISHED, "2026-02-01T00:00:00Z"),
        )
    ]
    mirrors = {
        "npm": f"{closed}/",
        "pypi": f"{closed}/simple/",
        "verify": {"mode": mode, "ttl": "1h", "timeout": "5s"},
    }
    client = await start_gateway(serve, make_config, tmp_path, npm_entries()[:2] + pypi, mirrors)

    for name in (SERVER, "io.github.acme/weather-py"):
        assert await served_versions(client, name) == [PUBLISHED, UNPUBLISHED]
        for version in (PUBLISHED, UNPUBLISHED):
            served_entry = await served(client, name, version)
            assert served_entry is not None
            meta = gateway_meta(served_entry)
            assert meta["verification"] == "unknown"
            assert meta["checkedAt"]  # asked, and the mirror did not answer
        latest = await served(client, name, "latest")
        assert latest is not None
        assert latest["server"]["version"] == UNPUBLISHED  # nothing was hidden


@pytest.mark.timeout(120)
async def test_mirror_that_goes_down_turns_unknown_and_enforce_keeps_serving(
    serve: Any, make_config: Any, tmp_path: Path
) -> None:
    """Verified against a live pypiserver, which then stops: once the results expire, the
    next round cannot ask, and nothing it once confirmed is hidden as missing."""
    ttl = 2  # short, so results expire within the test; long enough to read them meanwhile
    with pypi_server(tmp_path / "pypiserver") as mirror:
        mirrors = {"pypi": mirror.url, "verify": {"mode": "enforce", "ttl": f"{ttl}s"}}
        client = await start_gateway(serve, make_config, tmp_path, pypi_entries(), mirrors)
        before = await served(client, SERVER, PUBLISHED)
        assert before is not None
        assert gateway_meta(before)["verification"] == "available"
        assert await served_versions(client, SERVER) == [PUBLISHED]
    await asyncio.sleep(ttl + 0.2)  # the results expire; the mirror is gone
    await settle(client)

    after = await served(client, SERVER, PUBLISHED)
    assert after is not None
    assert gateway_meta(after)["verification"] == "unknown"
    assert checked_at(after) > checked_at(before)  # asked again, after the mirror stopped
    # Fail open, as documented: a version the mirror cannot be asked about is served again.
    assert await served_versions(client, SERVER) == [PUBLISHED, UNPUBLISHED]
