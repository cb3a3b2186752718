"""The audit log: who changed the gateway, what they did, and how it went.

Each operator action (a config reload, whether asked through `/admin/reload`, by SIGHUP or by
the config watch, and refused ones too; an upstream synced now; a held mass drop confirmed) is
one structlog event named `audit`, and one JSON line appended to `state_dir/audit.jsonl`, from
which `/admin/audit` (and so the operators' page) answers the newest `KEEP`, newest first.

An action through the admin API names its caller by a token id: the first 8 hex digits of the
bearer token's SHA-256, never the token. Reloads nobody asked for over HTTP name their source
(`signal`, `file-watch`).

Shared by the workers of `serve --workers N` (processes with one `state_dir`): each line is one
`write` to a file opened with O_APPEND, so lines from several workers never interleave. Past
`max_bytes` the file is cut to its newest `KEEP` lines by an atomic rewrite (a temporary file,
then a rename); a lock file keeps appends out while that happens (appends share the lock, the
rewrite takes it alone), so no worker writes into a file being replaced. Reading takes the
file's tail only (never more than `KEEP` longest lines); a line that is not an audit entry is
skipped. When the file cannot be written, the event is still logged and the action goes on.

Blocking: the shell calls `record` and `recent` in a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

import orjson
import structlog

from gateway.entry import format_timestamp, parse_timestamp

log = structlog.get_logger("gateway.audit")

AUDIT_FILE = "audit.jsonl"
KEEP = 100  # entries the page shows, and what a cut file keeps
MAX_BYTES = 1 << 20  # the file is cut back to KEEP lines past this size
MAX_DETAIL = 1000  # characters of an outcome's detail kept
MAX_TEXT = 200  # characters of any other field kept
MAX_LINE = 16384  # bytes: more than any line `record` writes (6 a character at most, escaped)
FIRST_READ = 32 * 1024  # bytes of the tail read first; doubled while too few lines are found

Outcome = Literal["ok", "refused", "failed"]
OUTCOMES = frozenset(get_args(Outcome))
Json = dict[str, object]


def token_id(token: str) -> str:
    """What the audit calls a bearer token's holder: 8 hex digits of its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: a token's holder through the admin API, or a source of its own."""

    who: str
    token_id: str | None = None

    @classmethod
    def of_token(cls, token: str) -> Actor:
        found = token_id(token)
        return cls(f"token {found}", found)


SIGNAL = Actor("signal")  # SIGHUP
FILE_WATCH = Actor("file-watch")  # a config file changed (`watch_config`)


def _clip(text: str, limit: int) -> str:
    """At most `limit` characters, all of them UTF-8 (an error's text may carry anything)."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.encode("utf-8", "replace").decode("utf-8")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One action and its outcome (`detail`: a short account, e.g. the mistakes of a refused
    config, one a line)."""

    at: datetime
    actor: Actor
    action: str
    target: str | None
    outcome: Outcome
    detail: str
    pid: int | None = None  # the worker that acted

    def to_json(self) -> Json:
        return {
            "at": format_timestamp(self.at),
            "who": self.actor.who,
            "tokenId": self.actor.token_id,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "detail": self.detail,
            "pid": self.pid,
        }

    @classmethod
    def parse(cls, line: bytes) -> AuditEntry | None:
        """An entry read back from the file; None for anything else (a corrupt line)."""
        if len(line) > MAX_LINE:
            return None
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(document, dict):
            return None
        text = {key: document.get(key) for key in ("at", "who", "action", "outcome", "detail")}
        target, token, pid = document.get("target"), document.get("tokenId"), document.get("pid")
        if (
            not all(isinstance(value, str) for value in text.values())
            or text["outcome"] not in OUTCOMES
            or not (target is None or isinstance(target, str))
            or not (token is None or isinstance(token, str))
            or not (pid is None or (isinstance(pid, int) and not isinstance(pid, bool)))
        ):
            return None
        try:
            at = parse_timestamp(str(text["at"]))
        except ValueError:
            return None
        actor = Actor(_clip(str(text["who"]), MAX_TEXT), None if token is None else token[:16])
        return cls(
            at, actor, _clip(str(text["action"]), MAX_TEXT),
            None if target is None else _clip(target, MAX_TEXT),
            document["outcome"], _clip(str(text["detail"]), MAX_DETAIL), pid,
        )  # fmt: skip


class Audit:
    """The audit log of one `state_dir` (see the module's docstring)."""

    def __init__(self, state_dir: Path, *, max_bytes: int = MAX_BYTES) -> None:
        self.path = state_dir / AUDIT_FILE
        self.max_bytes = max_bytes

    def record(
        self,
        actor: Actor,
        action: str,
        outcome: Outcome,
        detail: str = "",
        *,
        target: str | None = None,
        at: datetime | None = None,
    ) -> AuditEntry:
        """Log an action as the `audit` event and append it to the file. Never raises OSError:
        an audit that cannot be written is logged, and the action stands."""
        entry = AuditEntry(
            at or datetime.now(UTC), actor, _clip(action, MAX_TEXT),
            None if target is None else _clip(target, MAX_TEXT), outcome,
            _clip(detail, MAX_DETAIL), os.getpid(),
        )  # fmt: skip
        fields = entry.to_json()
        log.info(
            "audit", who=fields["who"], token_id=fields["tokenId"], action=fields["action"],
            target=fields["target"], at=fields["at"], outcome=fields["outcome"],
            detail=fields["detail"],
        )  # fmt: skip
        try:
            self._append(orjson.dumps(fields) + b"\n")
        except OSError as exc:
            log.warning("audit_write_failed", path=str(self.path), error=str(exc))
        return entry

    def recent(self, limit: int = KEEP) -> list[AuditEntry]:
        """The newest `limit` entries (at most KEEP), newest first; none when there is no file
        (or it cannot be read: logged)."""
        limit = max(0, min(limit, KEEP))
        try:
            lines = self._tail(limit)
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("audit_read_failed", path=str(self.path), error=str(exc))
            return []
        entries = [entry for line in lines if (entry := AuditEntry.parse(line)) is not None]
        return entries[::-1][:limit]

    # -- the file ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(self.path.with_name(AUDIT_FILE + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(lock)  # closing releases the lock

    def _append(self, line: bytes) -> None:
        with self._locked(exclusive=False):
            file = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(file, line)  # one write: the whole line, after every other
                size = os.fstat(file).st_size
            finally:
                os.close(file)
        if size > self.max_bytes:
            self._cut()

    def _cut(self) -> None:
        """Keep the newest KEEP lines: written aside, then renamed over the file."""
        with self._locked(exclusive=True):
            try:
                if self.path.stat().st_size <= self.max_bytes:
                    return  # another worker cut it meanwhile
                kept = [line for line in self._tail(KEEP) if AuditEntry.parse(line) is not None]
            except FileNotFoundError:
                return
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".audit-")
            try:
                with os.fdopen(handle, "wb") as out:
                    out.writelines(line + b"\n" for line in kept)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(temporary, 0o600)
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
        log.info("audit_file_cut", path=str(self.path), kept=len(kept))

    def _tail(self, wanted: int) -> list[bytes]:
        """The file's last complete lines: at least `wanted` of them where the file has them,
        read from its end in growing steps, never more than `wanted` longest lines' bytes."""
        with self.path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            cap = max(wanted, 1) * MAX_LINE
            step = FIRST_READ
            while True:
                start = max(0, size - min(step, cap))
                file.seek(start)
                chunk = file.read(size - start)
                lines = chunk.split(b"\n")
                if start > 0:
                    lines = lines[1:]  # begins inside a line
                lines = [line for line in lines if line.strip()]
                if len(lines) >= wanted or start == 0 or step >= cap:
                    return lines[-wanted:] if wanted else []
                step *= 2
