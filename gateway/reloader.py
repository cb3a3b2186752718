"""Hot reload: on SIGHUP, on `POST /admin/reload`, and when a config file changes.

A valid config swaps in with no request dropped (the refresher rebuilds, then one assignment);
an invalid one is refused, the old config keeps serving, and the error is kept for
`/admin/status` and logged. Each reload, applied, refused or failed, is in the audit log with
who asked for it (`audit`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import structlog

from gateway.audit import FILE_WATCH, SIGNAL, Actor, Audit, Outcome
from gateway.config import FederationConfig
from gateway.errors import ConfigError
from gateway.refresher import Refresher

log = structlog.get_logger("gateway.reloader")

ConfigLoader = Callable[[], FederationConfig]


async def reload_config(
    refresher: Refresher, load: ConfigLoader, actor: Actor = SIGNAL
) -> str | None:
    """Load the config again; apply it if valid. Returns the refusal, or None when applied.
    `actor` asked for it (the audit's who): SIGHUP when not told otherwise."""
    audit = Audit(refresher.config.gateway.state_dir)  # the one in use when asked

    async def record(outcome: Outcome, detail: str) -> None:
        await asyncio.to_thread(audit.record, actor, "reload", outcome, detail)

    async with refresher.reload_lock:  # a signal and a file change must not interleave
        try:
            config = await asyncio.to_thread(load)
        except ConfigError as exc:
            refresher.reload_error = str(exc)
            log.error("config_reload_failed", issues=[str(issue) for issue in exc.issues])
            await record("refused", refresher.reload_error)
            return refresher.reload_error
        except Exception as exc:
            await record("failed", f"the config could not be read: {type(exc).__name__}")
            raise
        try:
            await refresher.apply(config)
        except Exception as exc:
            await record("failed", f"the config could not be applied: {type(exc).__name__}")
            raise
        refresher.reload_error = None
        log.info(
            "config_reloaded", views=sorted(config.views), upstreams=len(config.gateway.upstreams)
        )
        await record(
            "ok", f"views: {', '.join(sorted(config.views)) or 'default only'}; "
            f"upstreams: {len(config.gateway.upstreams)}",
        )  # fmt: skip
        return None


def config_stamp(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """What tells a changed config directory from an unchanged one, without parsing it."""
    files = [directory / name for name in ("gateway.yaml", "policy.yaml", "mirrors.yaml")]
    views = directory / "views"
    if views.is_dir():
        files.extend(sorted(views.iterdir()))
    stamp = []
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            continue
        stamp.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stamp)


async def watch_config(refresher: Refresher, load: ConfigLoader) -> None:
    """Reload when a config file changes; the change must hold for one interval (no half
    written files)."""
    directory = refresher.config.directory
    applied = await asyncio.to_thread(config_stamp, directory)
    while True:
        interval = refresher.config.gateway.watch_config
        if interval <= 0:
            return
        await asyncio.sleep(interval)
        seen = await asyncio.to_thread(config_stamp, directory)
        if seen == applied:
            continue
        await asyncio.sleep(min(interval, 1.0))
        if await asyncio.to_thread(config_stamp, directory) != seen:
            continue  # still being written: look again next time
        log.info("config_changed", directory=str(directory))
        applied = seen
        await reload_config(refresher, load, FILE_WATCH)
