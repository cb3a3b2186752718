"""trust.yaml: where the gateway's trust signals come from, owned by the security team.

Today: OSV advisory feeds (known vulnerabilities and malware), each a zip of OSV records, a
directory of them, or one JSON file (a record or a list), for the package types it covers.
Policy and view rules then match versions by what the feeds say (`malicious`, `severity`,
`advisory`: see `config.Match`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, SecretStr, WithJsonSchema, model_validator

from gateway import registries
from gateway.fields import Duration, HttpUrl, Model, Slug

# The package types OSV has an ecosystem for (registries that name one).
OSV_TYPES = tuple(name for name, e in registries.ECOSYSTEMS.items() if e.osv is not None)


def _check_osv_type(value: str) -> str:
    if value not in OSV_TYPES:
        raise ValueError(
            f"{value!r} is not a package type OSV covers (one of {', '.join(OSV_TYPES)})"
        )
    return value


OsvType = Annotated[str, AfterValidator(_check_osv_type), WithJsonSchema({"enum": list(OSV_TYPES)})]


class OsvFeed(Model):
    """One OSV advisory feed: a file the operator keeps current (a zip such as OSV's
    `<Ecosystem>/all.zip`, a directory of records, or one JSON file), or a URL serving a zip
    or a JSON file (a generic repository mirroring OSV's), downloaded into `state_dir`."""

    name: Slug = Field(description="short id, named in _meta, explain, logs and status")
    file: Path | None = Field(
        None, description="a .zip of OSV records, a directory of them, or one .json"
    )
    url: HttpUrl | None = Field(None, description="a .zip or .json of OSV records over HTTP(S)")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="sent with each request to `url` (and its own redirects)"
    )
    timeout: Duration = Field(300.0, description="one download of `url`, at most this")
    ecosystems: list[OsvType] = Field(
        min_length=1,
        description="package types this feed speaks for: for others it says nothing",
    )
    refresh: Duration = Field(300.0, description="how often a change of the file is looked for")
    max_bytes: int = Field(
        2 * 1024**3, ge=1024, description="bytes of records read, uncompressed; a bigger feed fails"
    )
    max_records: int = Field(2_000_000, ge=1, description="records read; more fails the feed")

    @model_validator(mode="after")
    def _one_source(self) -> OsvFeed:
        if (self.file is None) == (self.url is None):
            raise ValueError("give exactly one of file or url")
        if self.headers and self.url is None:
            raise ValueError("headers are sent with `url`: a file feed has none")
        return self

    def path(self, state_dir: Path) -> Path:
        """Where the feed is read from: its file, or where its URL's answer is kept."""
        if self.file is not None:
            return self.file
        suffix = ".zip" if str(self.url).lower().split("?")[0].endswith(".zip") else ".json"
        return state_dir / "advisories" / f"{self.name}{suffix}"


class TrustSettings(Model):
    """trust.yaml: the sources of trust signals."""

    osv: list[OsvFeed] = Field(default_factory=list, description="OSV advisory feeds")

    @model_validator(mode="after")
    def _distinct(self) -> TrustSettings:
        names = [feed.name for feed in self.osv]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"feed names must differ: {', '.join(twice)} given twice")
        return self

    def covers(self) -> frozenset[str]:
        """Every package type some feed speaks for."""
        return frozenset(kind for feed in self.osv for kind in feed.ecosystems)
