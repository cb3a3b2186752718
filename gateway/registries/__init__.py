"""The package ecosystems the gateway knows, one module each: everything it knows about a
registryType (how a location is parsed, rewritten to a mirror, asked whether a mirror has a
version, how versions compare, the command that installs it) lives in that module.

Adding an ecosystem: a module here (an `Index` subclass for a registry located by
`registryBaseUrl`), its line in `ECOSYSTEMS`, its key in `config.MirrorSettings` and the
example config. A type the gateway does not know can still be named in config on purpose
(`extra_registry_types` in policy.yaml); upstream data with any other type is served as data.
"""

from __future__ import annotations

import difflib
import re

from gateway.registries.base import Check, Ecosystem, Index, Package
from gateway.registries.cargo import CARGO
from gateway.registries.go import GO
from gateway.registries.maven import MAVEN
from gateway.registries.mcpb import MCPB
from gateway.registries.npm import NPM
from gateway.registries.nuget import NUGET
from gateway.registries.oci import OCI
from gateway.registries.pypi import PYPI

ECOSYSTEMS: dict[str, Ecosystem] = {
    e.name: e for e in (NPM, PYPI, NUGET, CARGO, GO, MAVEN, OCI, MCPB)
}
INDEXES: dict[str, Index] = {e.name: e for e in ECOSYSTEMS.values() if isinstance(e, Index)}
INDEX = tuple(INDEXES)  # located by registryBaseUrl, a package index
KNOWN = tuple(ECOSYSTEMS)
PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # what a declared extra type may look like


def check_for(package: Package) -> Check | None:
    """The mirror check for a package as served (after its rewrite)."""
    ecosystem = ECOSYSTEMS.get(str(package.get("registryType")))
    return ecosystem.check(package) if ecosystem is not None else None


def closest(value: str, candidates: tuple[str, ...] = KNOWN) -> str | None:
    """The known type a mistyped one most likely meant, if any is close."""
    found = difflib.get_close_matches(value.casefold(), candidates, n=1, cutoff=0.5)
    return found[0] if found else None


def unknown(value: str, candidates: tuple[str, ...] = KNOWN) -> str:
    """What to tell an operator who named a type the gateway does not know."""
    guess = closest(value, candidates)
    hint = f"did you mean {guess!r}? " if guess else ""
    return (
        f"{value!r} is not a registry type the gateway knows ({', '.join(candidates)}): "
        f"{hint}a new type can be declared in policy.yaml extra_registry_types"
    )
