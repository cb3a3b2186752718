"""structlog set-up: JSON lines for machines, readable console output on a terminal.

`serve` writes its JSON lines through a buffer (`LogBuffer`): lines gather in memory and a
thread writes them to stderr at least every second, at once past 64 KB, and when told (SIGTERM,
SIGHUP, exit), so a request pays for making its line, not for a write to a pipe or a disk. At
most a second of lines is lost if the process is killed outright; a reader that stops reading
costs lines (past 8 MB waiting, counted and reported as `logs_dropped`), never the serving loop.

The access log (`request`, one line per request) is made without the structlog chain: the same
fields, keys and JSON, from one orjson call (a fifth of the chain's cost).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import orjson
import structlog

Format = Literal["auto", "json", "console"]
FLUSH_BYTES = 64 * 1024  # written at once past this
FLUSH_EVERY = 1.0  # seconds: written at least this often
MAX_WAITING = 8 * 1024 * 1024  # bytes of lines waiting; past it, lines are dropped (counted)

_request_log = structlog.get_logger("gateway.http")


def _orjson(obj: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    return orjson.dumps(obj, default=default, option=orjson.OPT_NON_STR_KEYS)


class LogBuffer:
    """Lines waiting to be written to stderr, by a thread of this process (started with the
    first line, again in a forked worker)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # one write at a time: the thread's, a signal's
        self._lines: list[bytes] = []
        self._size = 0
        self._dropped = 0
        self._wake = threading.Event()
        self._pid = 0

    def write(self, line: bytes) -> None:
        with self._lock:
            if self._size > MAX_WAITING:
                self._dropped += 1
                return
            self._lines.append(line)
            self._size += len(line)
            full = self._size >= FLUSH_BYTES
        if self._pid != os.getpid():
            self._start()
        if full:
            self._wake.set()

    def flush(self) -> None:
        """Write every waiting line now, in the caller's thread."""
        with self._writing:
            with self._lock:
                lines, dropped = self._lines, self._dropped
                self._lines, self._size, self._dropped = [], 0, 0
            if dropped:
                lines.append(_line({"lines": dropped, "event": "logs_dropped",
                                    "level": "warning", "timestamp": _now()}))  # fmt: skip
            if not lines:
                return
            data = b"".join(lines)
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
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
        threading.Thread(target=self._run, name="log-writer", daemon=True).start()

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_EVERY)
            self._wake.clear()
            self.flush()


BUFFER = LogBuffer()
atexit.register(BUFFER.flush)


class _BufferedLogger:
    """structlog's logger for rendered lines (bytes): into the buffer."""

    def __init__(self, *_: object) -> None:
        pass

    def msg(self, message: bytes) -> None:
        BUFFER.write(message + b"\n")

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


_second = -1
_second_text = ""


def _now() -> str:
    """structlog's `TimeStamper(fmt="iso", utc=True)` text, its date part made once a second."""
    global _second, _second_text
    now = time.time()
    second = int(now)
    if second != _second:
        _second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = second
    return f"{_second_text}.{int((now - second) * 1_000_000):06d}Z"


def _line(fields: dict[str, Any]) -> bytes:
    return _orjson(fields) + b"\n"


def _structlog_request(**fields: Any) -> None:
    _request_log.info("request", **fields)


def _buffered_request(**fields: Any) -> None:
    fields["event"] = "request"  # the keys in the chain's order: fields, event, context, ...
    for key, value in structlog.contextvars.get_contextvars().items():
        fields.setdefault(key, value)
    fields["level"] = "info"
    fields["timestamp"] = _now()
    BUFFER.write(_line(fields))


def _no_request(**_: Any) -> None:
    pass


log_request: Callable[..., None] = _structlog_request  # the access log (see configure_logging)


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
