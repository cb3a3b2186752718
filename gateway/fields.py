"""The typed values of the config files: each validated whole (patterns end where the value
does, in Python and in the JSON Schemas alike), with the JSON Schema editors check it by.
The models that use them are in `config`."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

from gateway import registries
from gateway.semver import VersionRange
from gateway.signals import ScanState, SignalState


class Model(BaseModel):
    """Base of every config model: frozen, and an unknown key is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


REGISTRY_TYPE_MARK = "x-gateway-registry-type"  # where config_schemas puts the declared types


def ecma(pattern: str) -> str:
    """A regex that Python matches whole (`fullmatch`), as a JSON Schema pattern, which
    matches anywhere unless anchored. The end is anchored by "no character follows", never by
    `$`, which both Python and some schema validators let match before a final newline."""
    return f"^(?:{pattern})(?![\\s\\S])"


def matching(pattern: str, message: str) -> Callable[[str], str]:
    """A check that accepts a string only when the whole of it matches `pattern` (never a
    value with a trailing newline, as a `$` anchor would let through). `message` may name the
    value as {value!r}. Pair it with `pattern_schema(pattern)`."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if compiled.fullmatch(value) is None:
            raise ValueError(message.format(value=value))
        return value

    return check


def pattern_schema(pattern: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": ecma(pattern)})


DURATION = r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)"
_DURATION = re.compile(DURATION)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """`"90s"`, `"5m"`, `"1h"`, `"7d"` -> seconds. A bare number is refused: is 72 seconds,
    minutes or hours? (The schema editors check against says the same.)"""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(
            f"{value!r} has no unit: write a duration like {value:g}s, {value:g}m, {value:g}h "
            f"or {value:g}d"
        )
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError(f"{value!r} is not a duration like 90s, 5m, 1h or 7d")


def format_duration(seconds: float) -> str:
    """Seconds as a duration `parse_duration` reads back (what `model_dump` writes)."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": ecma(DURATION), "examples": ["90s", "5m"]}),
]

_NAME_GLOB = re.compile(r"[A-Za-z0-9.*?_\-\[\]!/]+")


def _check_glob(value: str) -> str:
    if not _NAME_GLOB.fullmatch(value):
        raise ValueError(f"{value!r} is not a name glob (letters, digits, . - _ / and * ? [ ])")
    if value.count("[") != value.count("]"):
        raise ValueError(f"{value!r} has an unbalanced [ ] class")
    return value


NameGlob = Annotated[str, AfterValidator(_check_glob)]

_LISTEN = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.\-]*):(?P<port>[0-9]{1,5})")


def check_listen(value: str) -> str:
    match = _LISTEN.fullmatch(value)
    if not match or not 0 <= int(match.group("port")) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (for example 0.0.0.0:8080)")
    return value


_HTTP_URL = re.compile(r"https?://[^\s/?#]+(/[^\s]*)?")


def _check_http_url(value: str) -> str:
    if not _HTTP_URL.fullmatch(value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
SLUG = r"[a-z0-9][a-z0-9_-]{0,62}"  # upstream and view names: file names and URL segments
Slug = Annotated[
    str,
    AfterValidator(matching(SLUG, "{value!r} is not a lowercase id: a-z, 0-9, - and _ (<= 63)")),
    pattern_schema(SLUG),
]
_REVERSE_DNS = r"[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)+(/[a-zA-Z0-9._-]+)?"
ReverseDns = Annotated[
    str,
    AfterValidator(matching(_REVERSE_DNS, "{value!r} is not a reverse-DNS key like com.example.x")),
    pattern_schema(_REVERSE_DNS),
]


Transport = Literal["stdio", "streamable-http", "sse", "remote", "local"]
Status = Literal["active", "deprecated", "deleted"]


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _check_range(value: str) -> str:
    VersionRange(value)  # raises ValueError naming the problem
    return value


def _check_host_glob(value: str) -> str:
    if not value or not re.fullmatch(r"[A-Za-z0-9.*?\-\[\]]+", value):
        raise ValueError(f"{value!r} is not a host glob (letters, digits, . - and * ?)")
    return value


HostGlob = Annotated[str, AfterValidator(_check_host_glob)]
RangeText = Annotated[str, AfterValidator(_check_range)]


def _one_or_many(item: dict[str, Any]) -> tuple[Any, ...]:
    """A value or a non-empty list of values (any of them matches)."""
    schema = {"anyOf": [item, {"type": "array", "items": item, "minItems": 1}]}
    return (BeforeValidator(_as_list), Field(min_length=1), WithJsonSchema(schema))


_STRING = {"type": "string"}
# A registry type: one of registries.KNOWN, or one policy.yaml declares (the loader checks
# it, naming the closest known type); `config_schemas` writes the same set into the schema.
REGISTRY_TYPE_SCHEMA = {
    "type": "string",
    "enum": list(registries.KNOWN),
    REGISTRY_TYPE_MARK: True,
}
NameGlobs = Annotated[list[NameGlob], *_one_or_many(_STRING)]
Strings = Annotated[list[str], *_one_or_many(_STRING)]
Statuses = Annotated[list[Status], *_one_or_many({"enum": list(get_args(Status))})]
Ranges = Annotated[list[RangeText], *_one_or_many(_STRING)]
Transports = Annotated[list[Transport], *_one_or_many({"enum": list(get_args(Transport))})]
HostGlobs = Annotated[list[HostGlob], *_one_or_many(_STRING)]
RegistryTypes = Annotated[list[str], *_one_or_many(REGISTRY_TYPE_SCHEMA)]


# Trust match keys (see `trust_config` and `policy`): a severity rating, maybe compared.
SEVERITY = r"(>=|<=|>|<)?(none|low|medium|high|critical)|unknown"
Severity = Annotated[
    str,
    AfterValidator(matching(SEVERITY, "{value!r} is not a severity like critical or >=high "
                            "(none, low, medium, high, critical; or unknown)")),
    pattern_schema(SEVERITY),
]  # fmt: skip
ADVISORY_GLOB = r"[A-Za-z0-9*?._:-]{1,128}"
AdvisoryGlob = Annotated[
    str,
    AfterValidator(matching(ADVISORY_GLOB, "{value!r} is not an advisory id glob like GHSA-* "
                            "(letters, digits, . _ : - and * ?)")),
    pattern_schema(ADVISORY_GLOB),
]  # fmt: skip
Severities = Annotated[list[Severity], *_one_or_many({"type": "string", "pattern": ecma(SEVERITY)})]
AdvisoryGlobs = Annotated[
    list[AdvisoryGlob], *_one_or_many({"type": "string", "pattern": ecma(ADVISORY_GLOB)})
]
# A signal's state for a version (`signature`, `provenance`, `digest`: see `signals`).
SignalStates = Annotated[list[SignalState], *_one_or_many({"enum": list(get_args(SignalState))})]
# What the publisher's scan receipts that count say (`scan`: see `signals.scanned`).
ScanStates = Annotated[list[ScanState], *_one_or_many({"enum": list(get_args(ScanState))})]
