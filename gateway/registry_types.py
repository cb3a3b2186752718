"""The package registry types the gateway knows: the one list config checks, mirrors,
verification and the pages read.

A type not in it can still be named in config on purpose (`extra_registry_types` in
policy.yaml), so a new upstream type needs no release; upstream data with any other type is
served as data, never refused.
"""

from __future__ import annotations

import difflib
import re

INDEX = ("npm", "pypi", "nuget", "cargo")  # located by registryBaseUrl, a package index
KNOWN = (*INDEX, "oci", "mcpb")
PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # what a declared extra type may look like


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
