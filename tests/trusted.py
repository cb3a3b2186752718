"""A gateway on loopback set up the way the trust-signal tests set it up: one file upstream,
trust.yaml (with the test signing setup's trusted root where a section names one),
mirrors.yaml, a rule in policy.yaml that hides what a signal rejects, and one view that admits
only what a signal accepts; started, its mirrors asked, and rebuilt with their answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml

from gateway.loader import load_config
from tests.conftest import file_upstream
from tests.signing import SigningSetup

TOKEN = {"Authorization": "Bearer tok3n"}
ROOT = "./sigstore/trusted_root.json"  # where a trust.yaml section's trusted root is written


def write_yaml(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document), encoding="utf-8")


async def settle(client: Any) -> None:
    """Ask the mirrors what the catalog needs, then serve the answers."""
    from gateway.app import REFRESHER

    refresher = client.app[REFRESHER]
    await refresher.rebuild_now()
    await refresher.verify()
    snapshot = await refresher.rebuild_now()
    assert not snapshot.pending


async def start_gateway(
    tmp_path: Path,
    make_config: Any,
    serve: Any,
    entries: list[dict[str, Any]],
    *,
    trust: dict[str, Any],
    mirrors: dict[str, Any],
    deny: dict[str, Any],
    view: tuple[str, dict[str, Any]],
    setup: SigningSetup | None = None,
    name: str = "config",
) -> Any:
    """The gateway serving `entries`: `deny` in policy.yaml (after `default: allow`), the view
    `view[0]` admitting only `view[1]`; `setup`'s trusted root written where `ROOT` says."""
    upstream = file_upstream(tmp_path / "data", "official", entries)
    config = make_config(name, upstreams=[upstream], admin_token="tok3n", access_log=False)
    directory = config.directory
    if setup is not None:
        (directory / "sigstore").mkdir()
        (directory / ROOT).write_bytes(orjson.dumps(setup.trusted_root()))
    write_yaml(directory / "trust.yaml", trust)
    write_yaml(directory / "mirrors.yaml", mirrors)
    write_yaml(directory / "policy.yaml", {"default": "allow", "rules": [{"deny": deny}]})
    write_yaml(directory / "views" / f"{view[0]}.yaml",
               {"default": "deny", "rules": [{"allow": view[1]}]})  # fmt: skip
    client = await serve(load_config(directory))
    await settle(client)
    return client


async def explained(client: Any, server: str, version: str) -> dict[str, Any]:
    """`/admin/explain`'s report of one version: each view's verdict."""
    report = await (await client.get(f"/admin/explain?name={server}&version={version}",
                                     headers=TOKEN)).json()  # fmt: skip
    [item] = report["versions"]
    found: dict[str, Any] = item["views"]
    return found


def versions_of(served: list[tuple[str, str]], server: str) -> set[str]:
    return {version for name, version in served if name == server}
