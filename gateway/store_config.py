"""gateway.yaml `snapshot_store`: the option for replicas to share one catalog through
S3-compatible object storage (see `replicas`). Off by default: each replica syncs and builds
on its own, as without it."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, Field, SecretStr, model_validator

from gateway import __version__
from gateway.fields import Duration, HttpUrl, Model, matching, pattern_schema

if TYPE_CHECKING:
    from gateway.config import FederationConfig

_REGION = r"[a-z0-9-]{1,32}"
Region = Annotated[str, AfterValidator(matching(_REGION, "not a region name: {value!r}")),
                   pattern_schema(_REGION)]  # fmt: skip
_BUCKET_AND_PREFIX = r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/[A-Za-z0-9!_.*'()/-]{0,512})?"

# An S3 bucket name (3-63 lowercase letters, digits, dots, hyphens) and a key prefix of safe
# characters: s3://bucket or s3://bucket/some/prefix
_LOCATION = re.compile(_BUCKET_AND_PREFIX)


def _location(value: str) -> str:
    if _LOCATION.fullmatch(value) is None:
        raise ValueError("not s3://bucket or s3://bucket/prefix (a bucket name, safe characters)")
    return value.rstrip("/")


class StoreSettings(Model):
    """Where replicas share their catalog, and how long the one that builds holds the lease."""

    url: Annotated[str, AfterValidator(_location), pattern_schema(_BUCKET_AND_PREFIX)] = Field(
        description="s3://bucket/prefix: the catalogs and the lease are kept under it"
    )
    endpoint: HttpUrl | None = Field(
        None, description="an S3-compatible server's URL (MinIO, Ceph, ...); none: AWS S3"
    )
    region: Region = "us-east-1"
    access_key_id: SecretStr | None = Field(
        None, description="with secret_access_key; none: the environment's credentials"
    )
    secret_access_key: SecretStr | None = None
    lease: Duration = Field(30.0, ge=3.0, description="the builder's lease; renewed at a third")
    poll: Duration = Field(5.0, ge=0.1, description="how often the others look for a new one")
    stale_after: Duration = Field(
        900.0, description="a catalog older than this (or a store down this long) is not "
        "followed: the replica syncs itself",
    )  # fmt: skip
    whole_every: Duration = Field(
        3600.0, description="how often the holder puts the whole catalog again; after other "
        "syncs it puts only the servers that changed, which each replica applies in turn",
    )  # fmt: skip
    timeout: Duration = Field(30.0, description="per request; a catalog's download: 20 times it")
    max_catalog: int = Field(4 << 30, ge=1 << 20, description="a bigger catalog is not read")

    @model_validator(mode="after")
    def _both_keys(self) -> StoreSettings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        return self

    @property
    def bucket(self) -> str:
        return self.url.removeprefix("s3://").partition("/")[0]

    @property
    def prefix(self) -> str:
        """The key prefix, ending in / when there is one."""
        path = self.url.removeprefix("s3://").partition("/")[2]
        return f"{path}/" if path else ""


# What differs from replica to replica without changing the catalog: left out of what tells
# whether a catalog in the store was built with this replica's config.
PER_REPLICA = frozenset({
    "listen", "state_dir", "log_format", "log_level", "access_log", "admin_token",
    "watch_config", "keep_catalog", "keep_catalog_every", "snapshot_store",
})  # fmt: skip


def catalog_fingerprint(config: FederationConfig) -> str:
    """The gateway's version and every setting that shapes the catalog (secrets as asterisks):
    replicas share catalogs only when theirs are equal."""
    settings = config.model_dump_json(exclude={"directory": True, "gateway": set(PER_REPLICA)})
    return hashlib.sha256(f"{__version__}\n{settings}".encode()).hexdigest()
