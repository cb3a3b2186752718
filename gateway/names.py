"""A server name's one identity, and name globs matched on it.

Every decision about a name is made on its identity, never on its bytes: the whole name
case-folded, the namespace's trailing dots removed, and after the slash each run of `.`, `-`
and `_` taken as one `-`. `COM.Example./My__Tool` and `com.example/my.tool` are both
`com.example/my-tool`. Merge precedence, `owns`, upstream include/exclude and policy `name`
rules all decide on identities, so a look-alike spelling gets past no rule and no owner.
Served names, and lookups by URL, stay byte for byte as the upstream spelled them.

A name glob matches an identity when some spelling of that identity matches the glob as
fnmatch would: `com.example/my_tool` and `com.example/my-*` both match `COM.EXAMPLE/My.Tool`,
and a glob matches every name it matched byte for byte. Before a glob's `/` is the namespace;
in a glob without one, the text before its first wildcard is (after it, a separator may fall
on either side of the slash).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache

_SEPARATORS = re.compile(r"[._-]+")
_SEPARATOR_CHARS = "._-"
_WILDCARDS = "*?["


def identity(name: str) -> str:
    """The folded identity a name is compared by (the name itself when already folded, so
    most names share one string)."""
    namespace, slash, rest = name.partition("/")
    folded = namespace.casefold().rstrip(".")
    tail = rest.casefold()
    if "." in tail or "_" in tail or "--" in tail:
        tail = _SEPARATORS.sub("-", tail)
    whole = f"{folded}{slash}{tail}"
    return name if whole == name else whole


# Where a glob's character falls in the names it matches: the namespace, the part after the
# slash, or either (a glob without a slash, after its first wildcard).
_NAMESPACE, _REST, _EITHER = 0, 1, 2

# What a character of a name may leave in its identity, written as regex alternatives:
# after the slash, a separator is a `-`, or nothing when it continues a run (the identity's
# previous character is then that run's `-`); a namespace's dot is a dot, or nothing when it
# is one of the trailing dots (the identity's next character is then the slash).
_RUN = r"(?<=-)"
_TRAILING_DOT = r"(?=/)"


def _literal_slash(glob: str) -> int:
    """Where the glob's own `/` is (not one inside a bracket expression), or -1."""
    at = 0
    while at < len(glob):
        if glob[at] == "[" and (end := _class_end(glob, at)) > 0:
            at = end + 1
        elif glob[at] == "/":
            return at
        else:
            at += 1
    return -1


def _class_end(glob: str, start: int) -> int:
    """The index of the `]` closing the bracket expression opened at `start`, or -1 (then the
    `[` is a plain character, as in fnmatch)."""
    at = start + 1
    if at < len(glob) and glob[at] == "!":
        at += 1
    if at < len(glob) and glob[at] == "]":
        at += 1
    return glob.find("]", at)


_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789/"  # of identities, but for separators


def _named(text: str) -> Callable[[str], bool]:
    """Whether a character is a member of a bracket expression's members (fnmatch syntax,
    without the brackets and `!`): single characters and ranges, compared as fnmatch does."""
    singles: set[str] = set()
    ranges: list[tuple[str, str]] = []
    at = 0
    while at < len(text):
        if at + 2 < len(text) and text[at + 1] == "-":
            ranges.append((text[at], text[at + 2]))
            at += 3
        else:
            singles.add(text[at])
            at += 1
    return lambda char: char in singles or any(low <= char <= high for low, high in ranges)


def _bracket(text: str, zone: int) -> str:
    """A bracket expression as alternatives over identities: an identity's character matches
    when some spelling of it (either case; any separator, after the slash) would."""
    negated = text.startswith("!")
    named = _named(text[1:] if negated else text)

    def matches(char: str) -> bool:
        return named(char) != negated

    plain = [c for c in _ALPHABET if matches(c) or matches(c.upper())]
    chars = f"[{''.join(re.escape(c) for c in plain)}]" if plain else ""
    return _either(chars, [s for s in _SEPARATOR_CHARS if matches(s)], zone)


def _either(chars: str, separators: Iterable[str], zone: int) -> str:
    """Alternatives for one name character: one of `chars` (a regex class, or "" for none),
    or one of these separators as it shows in the identity in this zone."""
    options = [chars] if chars else []
    separators = set(separators)
    if zone == _NAMESPACE:
        options.extend(re.escape(s) for s in sorted(separators))
        if "." in separators:
            options.append(_TRAILING_DOT)
    elif separators:
        options.extend(("-", _RUN))
        if zone == _EITHER and "." in separators:  # a namespace's dot, trailing or not
            options.extend((r"\.", _TRAILING_DOT))
    if not options:
        return "(?!)"
    return options[0] if len(options) == 1 else f"(?:{'|'.join(options)})"


@lru_cache(maxsize=4096)
def glob_pattern(glob: str) -> tuple[str, str]:
    """A name glob as a regex matching (whole) the identities it matches, and the longest run
    of text every such identity contains (for a quick first search)."""
    slash = _literal_slash(glob)
    first_wildcard = min((glob.find(c) for c in _WILDCARDS if c in glob), default=len(glob))
    out: list[str] = []
    literal, longest = "", ""
    at = 0
    exact = True  # whether the previous character shows as itself in the identity
    while at < len(glob):
        char = glob[at]
        if slash >= 0:
            zone = _NAMESPACE if at <= slash else _REST
        else:
            zone = _NAMESPACE if at < first_wildcard else _EITHER
        step = 1
        if char == "*":
            out.append(".*")
            literal, exact = "", False
        elif char == "?":
            out.append(_either(".", _SEPARATOR_CHARS, zone) if zone != _REST else f"(?:.|{_RUN})")
            literal, exact = "", False
        elif char == "[" and (end := _class_end(glob, at)) > 0:
            out.append(_bracket(glob[at + 1 : end], zone))
            literal, exact, step = "", False, end + 1 - at
        elif char in _SEPARATOR_CHARS and zone != _NAMESPACE:
            out.append(_either("", char, zone))
            # A separator after a plain character starts a run: its `-` is certain.
            if zone == _REST and exact and not literal.endswith("-"):
                literal += "-"
            elif not (zone == _REST and literal.endswith("-")):
                literal, exact = "", False
        else:
            folded = char.casefold()
            if char == "." and zone == _NAMESPACE:
                out.append(_either("", ".", zone))
                dots_end = len(glob[at:]) - len(glob[at:].lstrip("."))
                # Dots that may end the namespace (before the slash, or a wildcard that
                # may take it) may not show in the identity.
                trailing = glob[at + dots_end : at + dots_end + 1] in ("", "/", "*", "?", "[")
                literal = "" if trailing else literal + "."
                exact = not trailing
            else:
                out.append(re.escape(folded))
                literal, exact = literal + folded, True
        longest = max(longest, literal, key=len)
        at += step
    return f"(?s:{''.join(out)})", longest


def compile_globs(globs: Iterable[str]) -> re.Pattern[str]:
    """One regex matching (whole) the identities any of these name globs match."""
    patterns = [glob_pattern(glob)[0] for glob in globs]
    return re.compile("|".join(f"(?:{p})" for p in patterns) or "(?!)")


@lru_cache(maxsize=1024)
def _matcher(globs: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    return compile_globs(globs).fullmatch


def matches_any(name: str, globs: Iterable[str]) -> bool:
    """Whether the name's identity matches any of the name globs."""
    return identity_matches(identity(name), globs)


def identity_matches(folded: str, globs: Iterable[str]) -> bool:
    """Whether an identity (already folded) matches any of the name globs."""
    return _matcher(tuple(globs))(folded) is not None
