"""The snapshot store's objects on S3-compatible storage (`snapshot_store`), through boto3 (the
optional `s3` extra). Blocking calls: `replicas` runs them in worker threads.

Under the configured prefix:

    lease.json        {"holder": ..., "expires": ...}: the replica that syncs and builds, until
                      then; taken by conditional PUT (If-None-Match: * when there is none,
                      If-Match: the expired one's ETag), so two replicas never both win it
    current.json      {"generation", "key", "builtAt", "fingerprint", "size"}: the catalog to
                      serve; when it is a catalog in part, also "base" (the generation whose
                      catalog it changes), "whole" ({"generation", "key", "size"}: the newest
                      whole catalog) and "parts" (the catalogs in part from that whole one
                      up to this one, each {"generation", "key", "size", "base"}): a replica
                      applies those after the one it serves, or reads the whole one and
                      applies them all
    catalogs/<generation>.pack        a catalog in the kept catalog's format (`packed`)
    catalogs/<generation>.part.pack   the servers that changed since `base` (`deltas`)

The holder keeps its last two whole catalogs there, and the parts after each; once it has put
its first, it removes those that holders before it left. It writes current.json only over the
one it wrote last (If-Match), so a holder that stalled past its lease names nothing after the
next holder.

Every answer is read as hostile: bounded, of one exact shape, a catalog's key only under the
prefix, its size announced and checked; credentials go only to the configured endpoint.
"""

from __future__ import annotations

import contextlib
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import LeaseLost, StoreError, StoreGarbled
from gateway.store_config import StoreSettings

MAX_NOTE = 64 * 1024  # bytes of lease.json or current.json
MAX_LISTED = 10_000  # catalogs' keys listed at most (those a former holder left are removed)
MAX_PARTS = 16  # catalogs in part after a whole one: the next is put whole as well
GENERATION = r"[0-9a-f]{16}\.[0-9]{1,12}"
CATALOG_KEY = re.compile(rf"catalogs/{GENERATION}\.pack")
PART_KEY = re.compile(rf"catalogs/{GENERATION}\.part\.pack")


class _Note(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class Lease(_Note):
    holder: str = Field(max_length=200)
    expires: datetime


class Whole(_Note):
    """A whole catalog in the store: its generation, key and size."""

    generation: str = Field(pattern=rf"\A{GENERATION}\z")
    key: str = Field(max_length=600)
    size: int = Field(ge=0)


class Part(Whole):
    """A catalog in part in the store: the servers that changed since `base`."""

    base: str = Field(pattern=rf"\A{GENERATION}\z")


class Current(_Note):
    generation: str = Field(pattern=rf"\A{GENERATION}\z")
    key: str = Field(max_length=600)
    built_at: datetime = Field(alias="builtAt")
    fingerprint: str = Field(max_length=200)
    size: int = Field(ge=0)
    base: str | None = Field(None, pattern=rf"\A{GENERATION}\z")  # in part: on this one
    whole: Whole | None = None  # in part: the newest whole catalog
    parts: list[Part] = Field([], max_length=MAX_PARTS)  # in part: those between the two

    def whole_catalog(self) -> Whole:
        """The whole catalog to serve: this one, or the newest whole one before it."""
        if self.whole is not None:
            return self.whole
        return Whole(generation=self.generation, key=self.key, size=self.size)

    def chain(self) -> list[Part]:
        """The catalogs in part from the whole one to this one, this one last (none: whole)."""
        if self.base is None:
            return []
        last = Part(generation=self.generation, key=self.key, size=self.size, base=self.base)
        return [*self.parts, last]

    def parts_after(self, generation: str) -> list[Part] | None:
        """What a replica serving `generation` applies to serve this one: none when it serves
        it already; the parts after it when it serves the whole one or a part before; None
        when it serves none of them (it reads the whole one, then applies every part)."""
        if generation == self.generation:
            return []
        chain = self.chain()
        at = next((n for n, part in enumerate(chain) if part.base == generation), None)
        return None if at is None else chain[at:]


def client_for(settings: StoreSettings) -> Any:
    """A boto3 S3 client for the configured endpoint (ImportError without the extra)."""
    import boto3
    from botocore.config import Config

    keys = {}
    if settings.access_key_id is not None and settings.secret_access_key is not None:
        keys = {
            "aws_access_key_id": settings.access_key_id.get_secret_value(),
            "aws_secret_access_key": settings.secret_access_key.get_secret_value(),
        }
    config = Config(
        connect_timeout=settings.timeout, read_timeout=settings.timeout,
        retries={"max_attempts": 2, "mode": "standard"}, s3={"addressing_style": "path"},
    )  # fmt: skip
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.endpoint, region_name=settings.region, config=config, **keys
    )


def read_current(data: bytes, max_catalog: int) -> Current:
    """current.json's bytes as a `Current`, taken only in its one exact shape: a catalog in
    part names its base and the whole catalog, each part follows on the one before it (the
    first on the whole one), every key is its own generation's under `catalogs/`, and the
    whole catalog, and the parts together, are no larger than `max_catalog`; `StoreGarbled`
    otherwise."""
    try:
        current = Current.model_validate_json(data)
    except ValidationError as exc:
        raise StoreGarbled(f"current.json is not a catalog's ({exc.error_count()} errors)") from exc
    chain = current.chain()
    if (current.base is None) != (current.whole is None) or (current.parts and not chain):
        raise StoreGarbled("current.json names a catalog in part without its base or whole")
    whole = current.whole_catalog()
    bases = [whole.generation, *(part.generation for part in chain)]
    if len(set(bases)) < len(bases) or any(
        part.base != base for part, base in zip(chain, bases, strict=False)
    ):
        raise StoreGarbled("current.json names catalogs in part that do not follow on")
    keys = [(CATALOG_KEY, whole.key), *((PART_KEY, part.key) for part in chain)]
    if any(pattern.fullmatch(key) is None for pattern, key in keys):
        raise StoreGarbled("current.json names a key outside catalogs/")
    if whole.key != f"catalogs/{whole.generation}.pack" or any(
        part.key != f"catalogs/{part.generation}.part.pack" for part in chain
    ):
        raise StoreGarbled("current.json names a catalog by another generation's key")
    for size in (whole.size, sum(part.size for part in chain)):
        if size > max_catalog:
            raise StoreGarbled(f"the catalog is larger than max_catalog ({size} bytes)")
    return current


class Store:
    """The store's objects, one call each (blocking)."""

    def __init__(self, settings: StoreSettings, client: Any = None) -> None:
        self.settings = settings
        self._client = client if client is not None else client_for(settings)
        self.bucket, self.prefix = settings.bucket, settings.prefix

    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
        )

        try:
            return getattr(self._client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 412:
                raise LeaseLost() from exc
            if status == 304:
                return None
            if status == 404:
                raise FileNotFoundError(kwargs.get("Key", "")) from exc
            code = exc.response.get("Error", {}).get("Code", status)
            raise StoreError(f"{operation}: {code}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"{operation}: {type(exc).__name__}: {exc}") from exc

    def _note(self, key: str, if_none_match: str | None = None) -> tuple[bytes, str] | None:
        """An object's bytes and ETag (None: unchanged since `if_none_match`)."""
        extra = {"IfNoneMatch": if_none_match} if if_none_match else {}
        answer = self._call("get_object", Key=self.prefix + key, **extra)
        if answer is None:
            return None
        if int(answer.get("ContentLength", 0)) > MAX_NOTE:
            answer["Body"].close()
            raise StoreGarbled(f"{key} is larger than {MAX_NOTE} bytes")
        body: bytes = answer["Body"].read(MAX_NOTE + 1)
        if len(body) > MAX_NOTE:
            raise StoreGarbled(f"{key} is larger than {MAX_NOTE} bytes")
        return body, str(answer["ETag"])

    def lease(self) -> tuple[Lease | None, str] | None:
        """The lease and its ETag (None: nobody has ever held it; a lease that is not one,
        None with its ETag: free to be taken over)."""
        try:
            found = self._note("lease.json")
        except FileNotFoundError:
            return None
        assert found is not None
        try:
            return Lease.model_validate_json(found[0]), found[1]
        except ValidationError:
            return None, found[1]

    def take_lease(self, lease: Lease, over: str | None) -> str:
        """Write the lease over the one with ETag `over` (None: where there is none); its new
        ETag. `LeaseLost` when another replica wrote it first."""
        condition = {"IfMatch": over} if over else {"IfNoneMatch": "*"}
        answer = self._call("put_object", Key=self.prefix + "lease.json",
                            Body=lease.model_dump_json().encode(), **condition)  # fmt: skip
        return str(answer["ETag"])

    def current(self, etag: str | None = None) -> tuple[Current, str] | None:
        """The catalog to serve and the ETag of what says so (None: none yet, or unchanged
        since `etag`)."""
        try:
            found = self._note("current.json", etag)
        except FileNotFoundError:
            return None
        if found is None:
            return None
        return read_current(found[0], self.settings.max_catalog), found[1]

    def put_catalog(self, path: Path, current: Current, over: str | None = None) -> str:
        """Upload a catalog file, then name it current; the ETag of current.json now. With
        `over` (the ETag of the current.json this holder wrote last), only if no one wrote it
        since (`LeaseLost` otherwise): a holder that stalled past its lease while it uploaded
        does not name its catalog over the next holder's."""
        with path.open("rb") as file:
            self._call("put_object", Key=self.prefix + current.key, Body=file,
                       ContentLength=current.size)  # fmt: skip
        # Unset fields left out: a whole catalog's note is what replicas before parts read.
        note = current.model_dump_json(by_alias=True, exclude_defaults=True).encode()
        condition = {"IfMatch": over} if over else {}
        try:
            answer = self._call("put_object", Key=self.prefix + "current.json", Body=note,
                                **condition)  # fmt: skip
        except LeaseLost:
            found = self.current()
            if found is None or found[0].generation != current.generation:
                raise
            return found[1]  # its own write, answered twice (a request retried)
        return str(answer["ETag"])

    def remove(self, key: str) -> None:
        self._call("delete_object", Key=self.prefix + key)

    def sweep(self, keep: list[str]) -> int:
        """Remove every catalog but those in `keep` (what holders before left); how many."""
        removed = 0
        for key in self.catalogs():
            if key not in keep:
                with contextlib.suppress(FileNotFoundError):  # gone meanwhile
                    self.remove(key)
                    removed += 1
        return removed

    def catalogs(self, most: int = MAX_LISTED) -> list[str]:
        """The catalogs' keys in the store (whole and in part; at most `most`, a page of a
        thousand at a time), relative to the prefix; any other key there is not named."""
        found: list[str] = []
        token: dict[str, str] = {}
        while len(found) < most:
            answer = self._call("list_objects_v2", Prefix=self.prefix + "catalogs/",
                                MaxKeys=1000, **token)  # fmt: skip
            for item in answer.get("Contents", ())[:1000]:
                key = str(item.get("Key", ""))[len(self.prefix) :]
                if CATALOG_KEY.fullmatch(key) or PART_KEY.fullmatch(key):
                    found.append(key)
            following = answer.get("NextContinuationToken")
            if not answer.get("IsTruncated") or not isinstance(following, str):
                break
            token = {"ContinuationToken": following}
        return found[:most]

    def fetch(self, current: Current | Whole, path: Path) -> None:
        """Download a catalog current.json names to `path`, no more than its announced size."""
        answer = self._call("get_object", Key=self.prefix + current.key)
        if int(answer.get("ContentLength", -1)) != current.size:
            answer["Body"].close()
            raise StoreGarbled("the catalog's size is not the one current.json announced")
        body, left = answer["Body"], current.size
        with path.open("wb") as out:
            while left > 0:
                chunk = body.read(min(left, 1 << 20))
                if not chunk:
                    raise StoreGarbled("the catalog ended early")
                out.write(chunk)
                left -= len(chunk)
        body.close()
