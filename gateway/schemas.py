"""JSON Schemas of the config files, generated from the models the gateway validates with, so
they never drift: what `config-schema` writes for editors."""

from __future__ import annotations

from collections.abc import Sequence

from gateway import registries
from gateway.config import (
    GatewaySettings,
    MirrorSettings,
    PolicySettings,
    ViewSettings,
)
from gateway.fields import REGISTRY_TYPE_MARK
from gateway.trust_config import TrustSettings


def config_schemas(extra_types: Sequence[str] = ()) -> dict[str, dict[str, object]]:
    """JSON Schemas of the config files, generated from the models so they never drift.
    Registry types are the known ones plus `extra_types` (a config's declared ones)."""
    schemas: dict[str, dict[str, object]] = {
        "gateway.yaml": GatewaySettings.model_json_schema(),
        "policy.yaml": PolicySettings.model_json_schema(),
        "mirrors.yaml": MirrorSettings.model_json_schema(),
        "views/<view>.yaml": ViewSettings.model_json_schema(),
        "trust.yaml": TrustSettings.model_json_schema(),
    }
    allowed = [*registries.KNOWN, *(t for t in extra_types if t not in registries.KNOWN)]
    for schema in schemas.values():
        _mark_registry_types(schema, allowed)
    return schemas


def _mark_registry_types(node: object, allowed: list[str]) -> None:
    if isinstance(node, dict):
        if node.pop(REGISTRY_TYPE_MARK, False):
            node["enum"] = list(allowed)
        for value in node.values():
            _mark_registry_types(value, allowed)
    elif isinstance(node, list):
        for value in node:
            _mark_registry_types(value, allowed)


SCHEMA_FILES = {
    "gateway.yaml": "gateway.schema.json",
    "policy.yaml": "policy.schema.json",
    "mirrors.yaml": "mirrors.schema.json",
    "views/<view>.yaml": "view.schema.json",
    "trust.yaml": "trust.schema.json",
}
