"""The operator's config, as validated pydantic models (keys as in the config contract).

Models are frozen and forbid unknown keys, so a typo is an error rather than a silent default.
Reading the files and interpolating `${...}` lives in `loader`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from gateway import __version__, registries
from gateway.fields import (
    REGISTRY_TYPE_SCHEMA,
    AdvisoryGlobs,
    Duration,
    HostGlobs,
    HttpUrl,
    Model,
    NameGlob,
    NameGlobs,
    Ranges,
    RegistryTypes,
    ReverseDns,
    ScanStates,
    Severities,
    SignalStates,
    Slug,
    Statuses,
    Strings,
    Transports,
    check_listen,
    matching,
    pattern_schema,
)
from gateway.icon_config import IconSettings
from gateway.signals import SIGNALS
from gateway.store_config import StoreSettings
from gateway.trust_config import TrustSettings


class RetrySettings(Model):
    """How one upstream request is retried on transient errors."""

    attempts: int = Field(4, ge=1, le=20, description="tries per request, the first included")
    initial_wait: Duration = Field(0.5, description="first backoff wait; doubles each retry")
    max_wait: Duration = Field(30.0, description="cap on one wait, Retry-After included")


class BreakerSettings(Model):
    """The per-upstream circuit breaker, on top of per-request retries."""

    failures: int = Field(3, ge=1, description="consecutive failed syncs that open the breaker")
    open_for: Duration = Field(60.0, description="no requests while open; then one probe")
    max_open_for: Duration = Field(3600.0, description="open_for doubles up to this")


def redact_url(url: str) -> str:
    """A URL without any user:password part: safe for logs, reprs and /admin answers."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


class UpstreamSettings(Model):
    """One upstream registry (`url`) or catalog file (`file`)."""

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            yield key, redact_url(value) if key == "url" and isinstance(value, str) else value

    name: Slug = Field(description="short id, used in _meta, logs and state files")
    url: HttpUrl | None = Field(None, description="base URL of an MCP registry")
    file: Path | None = Field(None, description="a server.json array or an API-shaped list")
    api: Literal["v0.1", "v0"] = "v0.1"
    optional: bool = Field(
        False, description="a replica is ready without this upstream's data (not waited for)"
    )
    refresh: Duration = Field(300.0, description="incremental poll (url) or change check (file)")
    full_sync: Duration = Field(21600.0, description="a full walk reconciles this often")
    timeout: Duration = Field(10.0, description="per request")
    page_size: int = Field(100, ge=1, le=100)
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    owns: list[NameGlob] = Field(default_factory=list)
    include: list[NameGlob] = Field(default_factory=lambda: ["*"])
    exclude: list[NameGlob] = Field(default_factory=list)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    sync_deadline: Duration = Field(600.0, description="a whole sync, all pages, at most this")
    max_page_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="a bigger page fails")
    max_pages: int = Field(5000, ge=1, description="a walk with more pages fails")
    max_entry_bytes: int = Field(256 * 1024, ge=256, description="bigger entries are skipped")
    max_stale: Duration = Field(86400.0, description="after this without a sync: on_stale")
    on_stale: Literal["flag", "hide"] = "flag"
    max_drop: float = Field(0.5, ge=0.0, le=1.0, description="share of entries one sync may "
                            "remove without a hold")  # fmt: skip

    @model_validator(mode="after")
    def _one_source(self) -> UpstreamSettings:
        if (self.url is None) == (self.file is None):
            raise ValueError("give exactly one of url or file")
        return self


class GatewaySettings(Model):
    """gateway.yaml: listening, state, and the upstreams in precedence order."""

    listen: Annotated[str, AfterValidator(check_listen)] = "0.0.0.0:8080"
    state_dir: Path = Path("./state")
    meta_namespace: ReverseDns = "com.example.mcp-gateway"
    admin_token: SecretStr | None = Field(
        None, description="bearer token for /admin; leave it out to turn /admin off"
    )
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True
    watch_config: Duration = Field(5.0, description="reload when config files change; 0s: off")
    keep_catalog: bool = Field(
        True, description="keep the served catalog in state_dir when stopping: a restart "
        "serves it at once",
    )  # fmt: skip
    keep_catalog_every: Duration = Field(
        0.0, description="also keep it after builds, at most this often (a restart after a "
        "crash too); 0s: only when stopping",
    )  # fmt: skip
    icons: IconSettings = Field(default_factory=IconSettings, description="off: no prefix")
    snapshot_store: StoreSettings | None = Field(None, description="replicas share one catalog")
    upstreams: list[UpstreamSettings] = Field(min_length=1)

    @field_validator("admin_token")
    @classmethod
    def _token_not_blank(cls, token: SecretStr | None) -> SecretStr | None:
        # An empty ${GATEWAY_ADMIN_TOKEN} would otherwise make "Bearer " a valid credential.
        if token is not None and not token.get_secret_value().strip():
            raise ValueError("it is empty: set a token, or leave the key out to turn /admin off")
        return token

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


TRUST_KEYS = ("malicious", "severity", "advisory")


class Match(Model):
    """What a rule matches; every key it names must match; a list means any of."""

    name: NameGlobs | None = None
    upstream: Strings | None = None
    status: Statuses | None = None
    version: Ranges | None = None
    registry_type: RegistryTypes | None = None
    transport: Transports | None = None
    remote_host: HostGlobs | None = None
    # Trust signals (trust.yaml's feeds): known malware, the highest severity, advisory ids
    malicious: bool | Literal["unknown"] | None = None
    severity: Severities | None = None
    advisory: AdvisoryGlobs | None = None
    # npm registry signatures, npm and PyPI provenance, the mcpb digest join (trust.yaml's
    # npm, pypi, mcpb), at the view's mirror
    signature: SignalStates | None = None
    provenance: SignalStates | None = None
    digest: SignalStates | None = None
    # the publisher's scan receipts over the bytes the view's mirror serves (scan_receipts)
    scan: ScanStates | None = None

    def trust_keys(self) -> list[str]:
        """The advisory keys it names (what OSV feeds answer)."""
        return [
            key for key in ("malicious", "severity", "advisory") if getattr(self, key) is not None
        ]

    def signal_keys(self) -> list[str]:
        """The signal keys it names (what the view's mirror answers)."""
        return [key for key in SIGNALS if getattr(self, key) is not None]


class Rule(Model):
    """One rule: `allow: {match}` or `deny: {match}`."""

    allow: Match | None = None
    deny: Match | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Rule:
        if (self.allow is None) == (self.deny is None):
            raise ValueError("a rule has exactly one of allow or deny")
        return self


class PackageFilter(Model):
    types: (
        Annotated[list[str], WithJsonSchema({"type": "array", "items": REGISTRY_TYPE_SCHEMA})]
        | None
    ) = Field(None, description="registryTypes kept; others are removed")


class Rules(Model):
    """What policy.yaml and a view's file both say: rules, cooldown, package types."""

    default: Literal["allow", "deny"] = "allow"
    rules: list[Rule] = Field(default_factory=list)
    min_age: Duration | None = Field(None, description="hold back versions younger than this")
    packages: PackageFilter = Field(default_factory=PackageFilter)

    def values(self, key: str) -> list[tuple[str, str]]:
        """Every value the rules give a match key (`registry_type`, `upstream`), with its
        dotted key; for `registry_type`, `packages.types` too (for the loader's checks)."""
        named: list[tuple[str, str]] = []
        if key == "registry_type":
            types = self.packages.types or ()
            named.extend((f"packages.types[{i}]", value) for i, value in enumerate(types))
        for index, rule in enumerate(self.rules):
            verb, match = ("allow", rule.allow) if rule.allow is not None else ("deny", rule.deny)
            given: list[str] = (getattr(match, key) or []) if match is not None else []
            named.extend((f"rules[{index}].{verb}.{key}[{at}]", v) for at, v in enumerate(given))
        return named


ExtraType = Annotated[
    str,
    AfterValidator(
        matching(
            registries.PATTERN.pattern,
            "{value!r} is not a registry type name (a-z, 0-9, . _ -)",
        )
    ),
    pattern_schema(registries.PATTERN.pattern),
]


class PolicySettings(Rules):
    """policy.yaml: which servers and versions every view may show."""

    extra_registry_types: list[ExtraType] = Field(
        default_factory=list,
        description="registry types the gateway does not know yet, named on purpose",
    )

    def allowed_registry_types(self) -> tuple[str, ...]:
        return (*registries.KNOWN, *self.extra_registry_types)


_MIRROR_URL = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")
_OCI_PREFIX = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]+)?(/[a-z0-9._\-]+)*/?")


def _check_mirror_url(value: str) -> str:
    if not _MIRROR_URL.fullmatch(value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    if "@" in urlsplit(value).netloc:
        raise ValueError(
            "a mirror URL with credentials would be served to every IDE: give IDEs their "
            "credentials through their package tool, and the gateway through verify.credentials"
        )
    return value  # kept verbatim: IDEs pass it to the package tool as is


def _check_identifier_glob(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} is not an identifier glob")
    return value


def _check_oci_prefix(value: str) -> str:
    if "://" in value or not _OCI_PREFIX.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a registry host and path without scheme "
            "(for example registry.example.com/dockerhub)"
        )
    return value.rstrip("/")


MirrorUrl = Annotated[str, AfterValidator(_check_mirror_url)]


class MirrorRule(Model):
    """One location rule: packages whose identifier matches `match` come from `url`."""

    match: Annotated[str, AfterValidator(_check_identifier_glob)] | None = Field(
        None, description="glob on the package identifier; no match key matches all"
    )
    url: MirrorUrl


def _rules(value: Any) -> Any:
    return [{"url": value}] if isinstance(value, str) else value


Locations = Annotated[
    list[MirrorRule],
    BeforeValidator(_rules),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": MirrorRule.model_json_schema()},
            ]
        }
    ),
]


class Credential(Model):
    """How to authenticate to one mirror, chosen by URL prefix (for verification only)."""

    prefix: MirrorUrl = Field(description="applies to mirror URLs starting with this")
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    username: SecretStr | None = Field(None, description="basic auth (OCI token service too)")
    password: SecretStr | None = None


class VerifySettings(Model):
    """Asking each mirror whether it really has the package version."""

    # YAML reads a bare `off` as false: take it as meant.
    mode: Annotated[
        Literal["off", "annotate", "enforce"],
        BeforeValidator(lambda v: "off" if v is False else v),
    ] = "off"
    concurrency: int = Field(16, ge=1, le=256)
    ttl: Duration = Field(3600.0, description="how long a result (a miss too) is trusted")
    timeout: Duration = Field(10.0, description="per request to a mirror")
    max_body: int = Field(
        32 * 1024 * 1024, ge=1024, description="bytes of one answer; larger ones are unknown"
    )
    credentials: list[Credential] = Field(default_factory=list)


class MirrorSettings(Model):
    """mirrors.yaml: where the bits come from. A view's `mirrors` overrides keys it names."""

    npm: Locations | None = None
    pypi: Locations | None = None
    nuget: Locations | None = None
    cargo: Locations | None = None
    go: Locations | None = Field(None, description="a GOPROXY (Go module proxy)")
    maven: Locations | None = Field(None, description="a maven2 repository")
    oci: dict[str, Annotated[str, AfterValidator(_check_oci_prefix)]] | None = Field(
        None, description="registry host -> mirror prefix, written into identifier"
    )
    mcpb: dict[MirrorUrl, MirrorUrl] | None = Field(
        None, description="download URL prefix -> mirror prefix; fileSha256 is kept"
    )
    unmirrored: Literal["keep", "drop-package", "drop-server"] = "keep"
    verify: VerifySettings = Field(default_factory=VerifySettings)

    def overridden_by(self, view: MirrorSettings | None) -> MirrorSettings:
        """These mirrors with every key a view's `mirrors` names replaced by the view's."""
        changes = {key: getattr(view, key) for key in view.model_fields_set} if view else {}
        return self.model_copy(update=changes) if changes else self


class ViewSettings(Rules):
    """views/<view>.yaml: a business unit's narrower policy, and its own mirrors."""

    description: str = ""
    mirrors: MirrorSettings | None = None


DEFAULT_VIEW = "default"  # the view served at the root, from policy.yaml alone


class FederationConfig(Model):
    """Everything loaded from one config directory, paths already resolved against it."""

    directory: Path
    gateway: GatewaySettings
    policy: PolicySettings = Field(default_factory=PolicySettings)
    mirrors: MirrorSettings = Field(default_factory=MirrorSettings)
    views: dict[str, ViewSettings] = Field(default_factory=dict)
    trust: TrustSettings = Field(default_factory=TrustSettings)

    def fingerprint(self) -> str:
        """A digest of the gateway's version and every setting (secrets as asterisks, the
        directory left out): a catalog kept for a restart is served only by the gateway and
        config it was built with."""
        settings = self.model_dump_json(exclude={"directory"}).encode()
        return hashlib.sha256(__version__.encode() + b"\n" + settings).hexdigest()
