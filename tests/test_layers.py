"""The functional core does no I/O: its modules import with aiohttp and asyncio unavailable
(the shell, which talks to upstreams and mirrors, is the only place that needs them)."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "gateway.entry", "gateway.names", "gateway.merge", "gateway.semver", "gateway.policy",
    "gateway.mirrors", "gateway.shaping", "gateway.view", "gateway.served", "gateway.catalog",
    "gateway.snapshot", "gateway.search", "gateway.postings", "gateway.query", "gateway.cursor",
    "gateway.explain", "gateway.diff", "gateway.registries", "gateway.packed",
]  # fmt: skip

_PROBE = """
import importlib, pkgutil, sys
for blocked in ("aiohttp", "asyncio"):
    sys.modules[blocked] = None  # an import of it raises ImportError
import gateway.registries
names = sys.argv[1:] + [
    "gateway.registries." + m.name for m in pkgutil.iter_modules(gateway.registries.__path__)
]
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def test_the_core_imports_without_io_libraries() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *CORE], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= len(CORE) + 8  # every ecosystem module too


def test_every_package_of_the_gateway_is_shipped() -> None:
    """A subpackage missing from pyproject's list would be left out of the wheel (and the
    container image) while every test from the source tree passes."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "gateway").rglob("__init__.py")
    }
    assert found <= listed, f"not in pyproject.toml's packages: {sorted(found - listed)}"


def test_every_exception_of_the_gateway_is_in_its_error_tree() -> None:
    """One tree (drawn in gateway/errors.py): an exception class defined anywhere in the
    package derives from GatewayError, and the tree's drawing names it."""
    import importlib
    import inspect
    import pkgutil
    from pathlib import Path

    import gateway
    from gateway.errors import GatewayError

    drawing = inspect.getdoc(importlib.import_module("gateway.errors")) or ""
    outside, undrawn = [], []
    for module in pkgutil.walk_packages(gateway.__path__, "gateway."):
        if module.name.startswith("gateway.demo") or module.name == "gateway.__main__":
            continue
        loaded = importlib.import_module(module.name)
        for name, value in vars(loaded).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.name
                and not name.startswith("_")
            ):
                if not issubclass(value, GatewayError):
                    outside.append(f"{module.name}.{name}")
                elif (
                    value.__module__ == "gateway.errors"
                    and value is not GatewayError
                    and name not in drawing
                    and not issubclass(value, _request_errors())
                ):
                    undrawn.append(name)
    assert outside == []
    assert undrawn == []
    assert Path(gateway.__file__).parent.joinpath("errors.py").is_file()


def _request_errors() -> type[BaseException]:
    from gateway.errors import RequestError

    return RequestError  # drawn as a family: its subclasses by status


def test_no_module_of_the_gateway_is_over_400_lines() -> None:
    """One idea per module: past 400 lines a module holds two (split it along the seam)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "gateway"
    long = {
        str(path.relative_to(root)): lines
        for path in root.rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}


def _imports(module: str) -> set[str]:
    """The gateway modules a module imports (at run time or for types)."""
    import ast
    from pathlib import Path

    source = Path(__file__).resolve().parents[1] / (module.replace(".", "/") + ".py")
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("gateway")}


def test_the_catalog_only_reads_what_the_build_made() -> None:
    """The catalog is a read model: it never reaches the policy or the views that decided."""
    deciding = {"gateway.view", "gateway.policy", "gateway.shaping", "gateway.mirrors"}
    assert not _imports("gateway.catalog") & deciding
    assert not _imports("gateway.served") & deciding  # an item's bytes: the build's values only


def test_a_deferred_rewrite_holds_values_not_the_view_that_decided_it() -> None:
    """A build's deferred rewrite is the entry and the view's rewrite settings: no policy,
    no cache of the build, nothing a later build changes."""
    import gc
    from datetime import UTC, datetime

    import orjson

    from gateway.config import MirrorSettings, PolicySettings
    from gateway.entry import parse_item
    from gateway.served import Deferred
    from gateway.shaping import Rewriter
    from gateway.view import ViewPolicy

    now = datetime(2026, 1, 1, tzinfo=UTC)
    mirrors = MirrorSettings.model_validate({"npm": "https://npm.example.com/"})
    view = ViewPolicy.of("v", PolicySettings(), None, mirrors)
    server = {"name": "io.github.a/b", "version": "1.0.0", "description": "d",
              "packages": [{"registryType": "npm", "identifier": "b", "version": "1.0.0",
                            "transport": {"type": "stdio"}}]}  # fmt: skip
    entry = parse_item({"server": server, "_meta": {}}, seen_at=now)
    admitted = view.admit("o", entry, now)
    assert isinstance(admitted, tuple)
    assert isinstance(admitted[0], Deferred)
    held = [value for value in gc.get_referents(admitted[0]) if value is not Deferred]
    assert not any(isinstance(value, ViewPolicy) for value in held)
    assert {type(value) for value in held} <= {type(entry), Rewriter, type(None), bytes}
    assert all(value == b"" for value in held if isinstance(value, bytes))  # nothing made yet
    server_json, end = admitted[0].made()
    assert orjson.loads(bytes(server_json))["packages"][0]["registryBaseUrl"] == (
        "https://npm.example.com/"
    )
    assert end == b',"packages":[{"registryType":"npm","original":{"registryBaseUrl":null}}]}}}'


def test_the_serving_process_loads_no_signature_library_until_signals_are_read() -> None:
    """cryptography and sigstore (about 10 MB of resident memory) are loaded by the helper
    process that verifies signals, and by config checks of keys and roots: never by a gateway
    whose trust.yaml reads no npm signals."""
    probe = (
        "import sys, gateway.app, gateway.cli, gateway.serve\n"
        "print(sorted(m for m in ('cryptography', 'sigstore', 'pypi_attestations', 'univers', 'cvss') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
