"""The gateway's error tree.

    GatewayError
    ├── ConfigError            a config directory is wrong; carries one ConfigIssue per mistake
    ├── FileRefused            (also an OSError) not a regular file, or larger than allowed
    ├── StillBlocked           a blocking call (a file on a hung mount) past its deadline
    ├── OverAllowance          work past what the serving loop gives one request (moved off it)
    ├── UpstreamError          an upstream registry or file could not give a good catalog
    │   ├── UpstreamUnavailable    transient: connection, timeout, 5xx, 429 (retried per request)
    │   └── UpstreamInvalid        unusable answer: bad JSON, bad shape, cursor loop (not retried)
    ├── EntryRejected          an upstream item that cannot be an entry (skipped, counted)
    ├── MirrorUnavailable      a mirror could not answer (down, 5xx, timeout): the check is unknown
    │   └── MirrorGarbled          its answer makes no sense for its protocol
    ├── StateError             a persisted state file is unreadable or corrupt
    │   └── KeptForOther           a kept catalog, whole, built by another version or config
    ├── Stopped                work asked to stop (shutting down) before it was done: undone
    ├── FeedInvalid            an advisory feed that cannot be used (the last good one is kept)
    ├── HelperFailed           the helper process died or could not start: its work is undone
    ├── RedirectRefused        a redirect outside the configured location, or too many of them
    ├── StoreError             the snapshot store could not be asked (down, refused, timeout)
    │   ├── StoreGarbled           it answered what it should not (shape, size, a key elsewhere)
    │   └── LeaseLost              a conditional write to the store lost to another replica's
    └── RequestError           a request that cannot be answered; rendered as problem+json
        ├── BadRequest             400
        ├── Unauthorized           401, /admin without the right bearer token
        ├── NotFound               404
        ├── MethodNotAllowed       405
        ├── UriTooLong             414
        ├── ValidationFailed       422, with one FieldError per bad parameter
        ├── NotReady               503, no catalog yet: upstreams' first data awaited
        └── Busy                   503, too much long work waiting already (Retry-After)

Exceptions carry fields, not preformatted strings; `str()` renders them for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One mistake in one config file, at one dotted key."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        if self.key:
            return f"{self.file}: {self.key}: {self.message}"
        return f"{self.file}: {self.message}"


class ConfigError(GatewayError):
    """A config directory that cannot be used; `issues` lists every mistake found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__(issues)
        self.issues = issues

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


class UpstreamError(GatewayError):
    """An upstream could not deliver a good catalog this time."""

    def __init__(self, upstream: str, reason: str, *, url: str | None = None) -> None:
        super().__init__(upstream, reason, url)
        self.upstream = upstream
        self.reason = reason
        self.url = url

    def __str__(self) -> str:
        where = f" ({self.url})" if self.url else ""
        return f"upstream {self.upstream}{where}: {self.reason}"


class UpstreamUnavailable(UpstreamError):
    """A transient failure worth retrying: connection error, timeout, 5xx, 429."""

    def __init__(
        self,
        upstream: str,
        reason: str,
        *,
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(upstream, reason, url=url)
        self.retry_after = retry_after


class UpstreamInvalid(UpstreamError):
    """An answer that retrying will not fix: not JSON, wrong shape, a cursor loop."""


class FileRefused(GatewayError, OSError):
    """A file that is not read: not a regular file, or too large. An OSError too, so that a
    caller reading files handles it with every other reason a file cannot be read."""

    def __init__(self, reason: str) -> None:
        super().__init__(0, reason)
        self.reason = reason


class OverAllowance(GatewayError):
    """Work that needs more than the serving loop gives one request: it is done again in a
    worker thread (see `pacing.Allowance`)."""


class StillBlocked(GatewayError):
    """A blocking call that did not return within its deadline."""

    def __init__(self, name: str, deadline: float) -> None:
        super().__init__(name, deadline)
        self.name = name
        self.deadline = deadline

    def __str__(self) -> str:
        return f"{self.name}: no answer within {self.deadline:g} s"


class EntryRejected(GatewayError):
    """An item that cannot be an entry; `reason` says why (one of a few fixed texts, so that
    skipped items are counted by reason), `name` is set when it was readable."""

    def __init__(self, reason: str, name: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.name = name

    def __str__(self) -> str:
        return self.reason


class MirrorUnavailable(GatewayError):
    """A mirror could not answer (down, 5xx, timeout, too large): the check's result is
    unknown, never missing."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class MirrorGarbled(MirrorUnavailable):
    """A mirror's answer that makes no sense for its protocol (an ecosystem module says so)."""


class StateError(GatewayError):
    """A state file that cannot be loaded."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"state file {self.path}: {self.reason}"


class KeptForOther(StateError):
    """A catalog kept for a restart, whole, but built by another version or config: not
    served (the restart goes on as without it)."""


class Stopped(GatewayError):
    """Work asked to stop before it was done (the gateway is shutting down): left undone."""


class FeedInvalid(GatewayError):
    """An advisory feed (OSV records) that cannot be used: unreadable, too large, or mostly
    malformed records (`skipped`: how many, per reason)."""

    def __init__(self, reason: str, skipped: dict[str, int] | None = None) -> None:
        super().__init__(reason, skipped)
        self.reason = reason
        self.skipped = skipped or {}

    def __str__(self) -> str:
        return self.reason


class RedirectRefused(GatewayError):
    """A redirect the gateway did not follow (`fetching.confined`): to `host`, and why."""

    def __init__(self, host: str, why: str) -> None:
        super().__init__(host, why)
        self.host = host
        self.why = why

    def __str__(self) -> str:
        return f"a redirect to {self.host}: {self.why}"


class StoreError(GatewayError):
    """The snapshot store (`snapshot_store`) could not be asked; the message says why."""


class StoreGarbled(StoreError):
    """The store answered what it should not: a note of another shape or too large, a
    catalog elsewhere than its place, or not of its announced size."""


class LeaseLost(StoreError):
    """A conditional write to the store lost: another replica wrote first."""


class HelperFailed(GatewayError):
    """Work sent to the helper process (`isolated`) that it could not finish."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid request parameter, in the registry's `errors[]` shape."""

    message: str
    location: str
    value: Any


class RequestError(GatewayError):
    """A request that cannot be answered; `app` renders it as an RFC 9457 problem body, with
    `detail` as its text. A fixed text is given as is; an error about a value carries the
    value as a field (a subclass below), and renders the text from it."""

    status = 400
    title = "Bad Request"
    retry_after: int | None = None  # seconds, for an answer to be asked again (503s)
    text = ""  # the detail when none is given

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self._detail = detail or self.text

    @property
    def detail(self) -> str:
        return self._detail

    def __str__(self) -> str:
        return self.detail


class BadRequest(RequestError):
    status = 400
    title = "Bad Request"


class CursorMismatch(BadRequest):
    """A request whose parameter differs from the one its cursor's walk was made with."""

    def __init__(self, parameter: str) -> None:
        super().__init__()
        self.parameter = parameter

    @property
    def detail(self) -> str:
        return (
            f"the cursor belongs to a walk with a different {self.parameter}: "
            "start a new walk without cursor, or keep the walk's parameters"
        )


class ConfigRefused(BadRequest):
    """A reload refused: the config has mistakes (the previous config keeps serving)."""

    def __init__(self, issues: str) -> None:
        super().__init__()
        self.issues = issues  # one line per mistake, as ConfigError renders them

    @property
    def detail(self) -> str:
        return f"config refused, the previous one keeps serving:\n{self.issues}"


class NothingHeld(BadRequest):
    """A confirmation asked of an upstream that holds no sync."""

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream

    @property
    def detail(self) -> str:
        return f"upstream {self.upstream!r} has no held sync to confirm"


class Unauthorized(RequestError):
    status = 401
    title = "Unauthorized"


class NotFound(RequestError):
    status = 404
    title = "Not Found"


class UnknownView(NotFound):
    def __init__(self, view: str) -> None:
        super().__init__()
        self.view = view

    @property
    def detail(self) -> str:
        return f"View not found: {self.view!r} is not configured"


class UnknownUpstream(NotFound):
    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream

    @property
    def detail(self) -> str:
        return f"no upstream named {self.upstream!r}"


class MethodNotAllowed(RequestError):
    status = 405
    title = "Method Not Allowed"


class UriTooLong(RequestError):
    status = 414
    title = "URI Too Long"

    def __init__(self, max_path: int, max_query: int) -> None:
        super().__init__()
        self.max_path = max_path
        self.max_query = max_query

    @property
    def detail(self) -> str:
        return f"path or query too long: at most {self.max_path} and {self.max_query} characters"


class ValidationFailed(RequestError):
    status = 422
    title = "Unprocessable Entity"

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("validation failed")
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Awaited:
    """An upstream a replica waits for, and why it has no data yet (its last error, if any)."""

    upstream: str
    error: str | None


class NotReady(RequestError):
    """No catalog is served yet: the upstreams whose first data is awaited (none: the first
    build is running)."""

    status = 503
    title = "Service Unavailable"
    retry_after = 1

    def __init__(self, awaited: list[Awaited]) -> None:
        super().__init__()
        self.awaited = awaited

    @property
    def detail(self) -> str:
        if not self.awaited:
            return "the catalog is being built; retry in a moment"
        named = ", ".join(f"{a.upstream} ({a.error or 'first sync running'})" for a in self.awaited)
        return f"waiting for the first data of upstream(s): {named}"


class Busy(RequestError):
    """Work too long for the serving loop, while as much already waits for the thread that
    does it: answered at once, to be asked again shortly, rather than queued without end."""

    status = 503
    title = "Service Unavailable"
    retry_after = 1
    text = "the gateway is busy with long searches; try again in a second"


class LeaderUnavailable(RequestError):
    """The building worker did not answer another worker (it is starting, stopping, or gone)."""

    status = 503
    title = "Service Unavailable"
    retry_after = 1
    text = "the worker that syncs and builds is not answering; try again in a moment"
