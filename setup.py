"""Packaging (metadata in pyproject.toml), with the snapshot build compiled by mypyc on request.

`GATEWAY_COMPILE=1 pip install --no-build-isolation .` (in an environment that has the test
extra, for mypy and the type stubs, and a C compiler) compiles the modules a snapshot build
runs through to C extensions: a full build then takes about two thirds of the time
(bench/README.md). Without it the package is pure Python and behaves the same. The container
image is compiled.
"""

import os

from setuptools import setup

# The modules a snapshot build spends its time in (entry: its facts are read for every
# decision; merge, semver, policy, view, catalog, snapshot, admitting, increment: the build
# itself).
COMPILED = [
    "gateway/entry.py",
    "gateway/merge.py",
    "gateway/semver.py",
    "gateway/policy.py",
    "gateway/shaping.py",
    "gateway/view.py",
    "gateway/shapes.py",
    "gateway/served.py",
    "gateway/catalog.py",
    "gateway/build.py",
    "gateway/admitting.py",
    "gateway/increment.py",
    "gateway/snapshot.py",
    "gateway/released.py",
    "gateway/pack.py",
    "gateway/unpack.py",
    "gateway/search.py",
    "gateway/postings.py",
    "gateway/hits.py",
    "gateway/stepping.py",
]


def ext_modules() -> list[object]:
    if os.environ.get("GATEWAY_COMPILE") != "1":
        return []
    from mypyc.build import mypycify

    return list(mypycify(COMPILED, opt_level="3", group_name="gateway_build"))


setup(ext_modules=ext_modules())
