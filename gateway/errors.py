"""The gateway's error tree.

    GatewayError
    ├── ConfigError            a config directory is wrong; carries one ConfigIssue per mistake
    ├── UpstreamError          an upstream registry or file could not give a good catalog
    │   ├── UpstreamUnavailable    transient: connection, timeout, 5xx, 429 (retried per request)
    │   └── UpstreamInvalid        unusable answer: bad JSON, bad shape, cursor loop (not retried)
    ├── StateError             a persisted state file is unreadable or corrupt
    └── RequestError           a request that cannot be answered; rendered as problem+json
        ├── BadRequest             400
        ├── Unauthorized           401, /admin without the right bearer token
        ├── NotFound               404
        ├── MethodNotAllowed       405
        ├── UriTooLong             414
        ├── ValidationFailed       422, with one FieldError per bad parameter
        └── NotReady               503, no catalog yet: upstreams' first data awaited

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


class StateError(GatewayError):
    """A state file that cannot be loaded."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"state file {self.path}: {self.reason}"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid request parameter, in the registry's `errors[]` shape."""

    message: str
    location: str
    value: Any


class RequestError(GatewayError):
    """A client error; the middleware renders it as an RFC 9457 problem body."""

    status = 400
    title = "Bad Request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(RequestError):
    status = 400
    title = "Bad Request"


class Unauthorized(RequestError):
    status = 401
    title = "Unauthorized"


class NotFound(RequestError):
    status = 404
    title = "Not Found"


class MethodNotAllowed(RequestError):
    status = 405
    title = "Method Not Allowed"


class UriTooLong(RequestError):
    status = 414
    title = "URI Too Long"


class ValidationFailed(RequestError):
    status = 422
    title = "Unprocessable Entity"

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("validation failed")
        self.errors = errors


class NotReady(RequestError):
    status = 503
    title = "Service Unavailable"
