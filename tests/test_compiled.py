"""The compiled snapshot build (setup.py, GATEWAY_COMPILE=1): what CI compiles is what runs,
and an editable install's compiled modules never hide later edits of their source."""

from __future__ import annotations

import ast
import os
from importlib import import_module
from pathlib import Path

import pytest

import gateway
from tests.conftest import REPO

PACKAGE = Path(gateway.__file__).parent


def _compiled_sources() -> list[str]:
    """The modules setup.py compiles, read from setup.py itself."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "COMPILED" for target in node.targets
        ):
            return [str(source) for source in ast.literal_eval(node.value)]
    raise AssertionError("setup.py has no COMPILED list")


def test_a_compiled_run_runs_every_compiled_module() -> None:
    """CI runs the suite a second time with GATEWAY_COMPILE=1 after compiling: it must not
    test pure Python twice."""
    if os.environ.get("GATEWAY_COMPILE") != "1":
        pytest.skip("a pure-Python run (GATEWAY_COMPILE is not 1)")
    for source in _compiled_sources():
        module = import_module(source.removesuffix(".py").replace("/", "."))
        assert not str(module.__file__).endswith(".py"), f"{source} is not compiled"
    assert gateway.compiled()


def test_compiled_modules_are_newer_than_their_source() -> None:
    """An editable install keeps its compiled modules next to the source, and Python prefers
    them: after an edit, compile again (or delete gateway/*.so)."""
    built = sorted(PACKAGE.glob("*.so"))
    if not built:
        pytest.skip("no compiled modules in the source tree")
    for extension in built:
        source = PACKAGE / (extension.name.split(".", 1)[0] + ".py")
        assert extension.stat().st_mtime >= source.stat().st_mtime, (
            f"{source.name} changed after it was compiled: run "
            "GATEWAY_COMPILE=1 pip install --no-build-isolation -e . or delete gateway/*.so"
        )


def test_setup_compiles_only_modules_that_exist() -> None:
    sources = _compiled_sources()
    assert sources, "setup.py compiles nothing"
    for source in sources:
        assert (REPO / source).is_file(), source
