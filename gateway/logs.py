"""structlog set-up: JSON lines for machines, readable console output on a terminal.

`serve` writes its JSON lines through a buffer (`LogBuffer`): lines gather in memory and a
thread writes them to stderr at least every second, at once past 64 KB, and when told (SIGTERM,
SIGHUP, exit), so a request pays for making its line, not for a write to a pipe or a disk. At
most a second of lines is lost if the process is killed outright; a reader that stops reading
costs lines (past 8 MB waiting, counted and reported as `logs_dropped`), never the serving loop.

The access log (`request`, one line per request) is made without the structlog chain: the same
fields, keys and JSON, from one orjson call (a fifth of the chain's cost). The serving loop only
appends the request's fields, with no lock; the writer makes their lines, a batch at a time,
in the order of every other line (measured in the serving process: making a line where the
request is answered cost about 10 us of a core, twice what appending its fields costs).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import structlog

Format = Literal["auto", "json", "console"]
FLUSH_BYTES = 64 * 1024  # written at once past this
FLUSH_EVERY = 1.0  # seconds: written at least this often
MAX_WAITING = 8 * 1024 * 1024  # bytes of lines waiting; past it, lines are dropped (counted)
ACCESS_BYTES = 200  # an access line besides its path, as what waits counts it

_request_log = structlog.get_logger("gateway.http")


def _orjson(obj: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    return orjson.dumps(obj, default=default, option=orjson.OPT_NON_STR_KEYS)


# What the access log appends for a request: request id, method, path, status, duration in
# seconds, the wall clock; its line is made when written (`_access_line`).
Access = tuple[str, str, str, int, float, float]


def _counted(line: bytes | Access) -> int:
    """The bytes a waiting line counts as: its own, or an access line's path and
    `ACCESS_BYTES`."""
    return len(line) if isinstance(line, bytes) else len(line[2]) + ACCESS_BYTES


class LogBuffer:
    """Lines waiting to be written to stderr, by a thread of this process (started with the
    first line, again in a forked worker).

    A line (or an access line's fields, made into its line when written) is appended to a
    deque (atomic, no lock: this runs for every request) and taken from its other end by the
    writer; the bytes appended and taken are counted by each side alone, so what waits is
    known without a lock (give or take a line written meanwhile; an access line counted at
    its path and `ACCESS_BYTES`)."""

    def __init__(self) -> None:
        self._writing = threading.Lock()  # one write at a time: the thread's, a signal's
        self._lines: deque[bytes | Access] = deque()
        self._appended = 0  # bytes appended (by writers of lines)
        self._taken = 0  # bytes taken (by the one writing, under `_writing`)
        self._dropped = 0
        self._wake = threading.Event()
        self._woken = False  # the thread told to write already (told once per batch)
        self._running = False  # this process's thread started (a forked child has none)
        os.register_at_fork(after_in_child=self._forked)

    def write(self, line: bytes | Access) -> None:
        """Append a line, or an access line's fields."""
        # No system call here (not even getpid): one costs microseconds in some sandboxes,
        # and this runs for every request.
        waiting = self._appended - self._taken
        if waiting > MAX_WAITING:
            self._dropped += 1
            return
        self._lines.append(line)
        size = _counted(line)
        self._appended += size
        if not self._running:
            self._start()
        if waiting + size >= FLUSH_BYTES and not self._woken:
            self._woken = True
            self._wake.set()

    def flush(self) -> None:
        """Write every waiting line now, in the caller's thread."""
        with self._writing:
            lines = self._lines
            self._woken = False
            taken = [lines.popleft() for _ in range(len(lines))]
            self._taken += sum(_counted(one) for one in taken)
            data = b"".join([one if isinstance(one, bytes) else _access_line(one)
                             for one in taken])  # fmt: skip
            dropped, self._dropped = self._dropped, 0
            if dropped:
                data += _line({"lines": dropped, "event": "logs_dropped", "level": "warning",
                               "timestamp": datetime.now(UTC)})  # fmt: skip
            if not data:
                return
            stream = sys.stderr  # looked up at each write: whatever stderr is now
            try:
                raw = getattr(stream, "buffer", None)
                if raw is not None:
                    raw.write(data)
                else:
                    stream.write(data.decode())
                stream.flush()
            except (OSError, ValueError):  # a closed or broken stderr: nothing to tell
                pass

    def _start(self) -> None:
        with self._writing:
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name="log-writer", daemon=True).start()

    def _forked(self) -> None:
        self._writing = threading.Lock()
        self._running = False
        self._lines = deque()  # the parent's lines: the parent writes them
        self._appended = self._taken = self._dropped = 0
        self._woken = False

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_EVERY)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # this batch lost (nowhere to say so), not every line after it
                continue


BUFFER = LogBuffer()
atexit.register(BUFFER.flush)


class _BufferedLogger:
    """structlog's logger for rendered lines (bytes): into the buffer."""

    def __init__(self, *_: object) -> None:
        pass

    def msg(self, message: bytes) -> None:
        BUFFER.write(message + b"\n")

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


_LINE = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE


def _line(fields: dict[str, Any]) -> bytes:
    """A JSON line; a datetime as structlog's `TimeStamper(fmt="iso", utc=True)` writes it."""
    return orjson.dumps(fields, option=_LINE)


def _structlog_request(
    request_id: str, method: str, path: str, status: int, seconds: float
) -> None:
    duration_ms = round(seconds * 1000, 2)
    _request_log.info("request", request_id=request_id, method=method, path=path[:512],
                      status=status, duration_ms=duration_ms)  # fmt: skip


_bound: dict[str, Any] = {}  # what `bind_process` bound: every line of this process has it
_bound_json = b""  # the same, as the access line writes it: `"key":value,` each


def bind_process(**values: Any) -> None:
    """Bind values to every line this process writes (`serve --workers`: the worker's index):
    in structlog's context, and in the access log's (which reads no context per request)."""
    global _bound_json
    structlog.contextvars.bind_contextvars(**values)
    _bound.update(values)
    _bound_json = orjson.dumps(_bound, option=orjson.OPT_NON_STR_KEYS)[1:-1]
    _bound_json += b"," if _bound_json else b""


def _buffered_request(request_id: str, method: str, path: str, status: int, seconds: float) -> None:
    """The request's fields, for the writer to make the chain's line of (`_access_line`)."""
    BUFFER.write((request_id, method, path[:512], status, seconds, time.time()))


# The chain's access line (`_structlog_request`): the same keys in the same order (fields,
# event, what the process bound, level, timestamp), each value as orjson writes it. Filled in
# rather than made from a dict: 1.3 us a line against 4 us (a dict of eight keys per line).
_ACCESS = (
    b'{"request_id":%b,"method":%b,"path":%b,"status":%d,"duration_ms":%b,"event":"request",'
    b'%b"level":"info","timestamp":%b}\n'
)
_dumps = orjson.dumps
_UTC_Z = orjson.OPT_UTC_Z


def _access_line(access: Access) -> bytes:
    """The chain's line (`_structlog_request`), byte for byte."""
    request_id, method, path, status, seconds, now = access
    # round(x, 2) rounds half to even on the decimal digits (made through a string: 1 us);
    # this rounds half up on the binary value, which only an exact tie can tell apart.
    duration_ms = int(seconds * 100_000 + 0.5) / 100
    stamp = _dumps(datetime.fromtimestamp(now, UTC), option=_UTC_Z)
    try:
        return _ACCESS % (_dumps(request_id), _dumps(method), _dumps(path), status,
                          _dumps(duration_ms), _bound_json, stamp)  # fmt: skip
    except orjson.JSONEncodeError:  # a text that is not UTF-8: bytes an HTTP parser kept as
        # surrogates (aiohttp's parser in pure Python does); written escaped, not lost
        texts = (_utf8(request_id), _utf8(method), _utf8(path))
        return _access_line((*texts, status, seconds, now))


def _utf8(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _no_request(request_id: str, method: str, path: str, status: int, seconds: float) -> None:
    pass


# The access log: (request id, method, raw path, status, seconds it took to answer); see
# configure_logging.
log_request: Callable[[str, str, str, int, float], None] = _structlog_request


def configure_logging(
    log_format: Format = "auto", level: str = "info", *, buffered: bool = False
) -> None:
    """Configure structlog once per process (the CLI calls it; library code never does);
    `buffered` (`serve`): JSON lines through `BUFFER`, the access log made directly."""
    global log_request
    console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    number = logging.getLevelNamesMapping()[level.upper()]
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if console:
        processors.append(structlog.dev.ConsoleRenderer())
        factory: Callable[..., Any] = _stderr_logger
    elif buffered:
        processors.append(structlog.processors.JSONRenderer(serializer=_orjson))
        factory = _BufferedLogger
    else:
        processors.append(structlog.processors.JSONRenderer())
        factory = _stderr_logger
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    if number > logging.INFO:
        log_request = _no_request
    elif buffered and not console:
        log_request = _buffered_request
    else:
        log_request = _structlog_request


def _stderr_logger(*_: object) -> structlog.PrintLogger:
    # Looked up at each use, not bound once: whatever stderr is now (tests swap it).
    return structlog.PrintLogger(sys.stderr)
