"""What makes a refresher build again besides a sync: held-back versions coming of age,
mirror answers, advisory feeds (a base of `Refresher`, which owns the state they read)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from gateway.registries.base import Check

if TYPE_CHECKING:
    from gateway.advisories import Feeds
    from gateway.snapshot import Snapshot
    from gateway.verify import Verifier

log = structlog.get_logger("gateway.refresher")


async def on_each(event: asyncio.Event, step: Callable[[], Awaitable[None]], failed: str) -> None:
    """Run `step` each time `event` is set, one at a time (sets meanwhile make one more run);
    a step that fails is logged as `failed` and the next one runs: a background task never
    ends with a failure."""
    while True:
        await event.wait()
        event.clear()
        try:
            await step()
        except Exception:
            log.exception(failed)


class Triggers:
    """Rebuilds asked for by time, the mirrors and the advisory feeds (`_ask_build`)."""

    snapshot: Snapshot | None
    verifier: Verifier
    advisories: Feeds
    _dirty: asyncio.Event  # a build asked for: the background builder waits on it
    _begun = 0  # builds begun (each reads every input as it begins)
    _asked = -1  # builds begun when a build was last asked for: one begun after has it
    _served_build = 0  # the number of the last build served (counted as builds begun)
    _cooldown: asyncio.TimerHandle | None
    _verifying: asyncio.Task[int] | None

    _build_lock: asyncio.Lock

    def _may_build(self) -> bool:
        raise NotImplementedError  # the refresher's

    async def _rebuild(self) -> Snapshot:
        raise NotImplementedError  # the refresher's

    def _ask_build(self) -> None:
        self._asked = self._begun
        self._dirty.set()

    async def _rebuild_unless_built(self, mark: int) -> None:
        """Build, unless a build that began after `mark` (builds begun; it read every input
        as it was then) is served: a sync asked for, which the background builder hears of
        too, is built once."""
        async with self._build_lock:
            if self._served_build <= mark:
                await self._rebuild()

    async def _build_loop(self) -> None:
        """The background builder: builds what is asked for (`_ask_build`), one at a time;
        after one that fails, the last good catalog stays served and the next request builds."""
        await on_each(self._dirty, self._build_asked, "catalog_build_failed")

    async def _build_asked(self) -> None:
        if self._may_build():
            await self._rebuild_unless_built(self._asked)

    def _schedule_cooldown_rebuild(self, when: datetime | None) -> None:
        """Versions held back by `min_age` appear by themselves once old enough."""
        if self._cooldown is not None:
            self._cooldown.cancel()
        delay = None if when is None else max((when - datetime.now(UTC)).total_seconds(), 0) + 0.001
        loop = asyncio.get_running_loop()
        self._cooldown = None if delay is None else loop.call_later(delay, self._ask_build)

    # -- mirror verification -----------------------------------------------------------------

    def _start_verification(self, checks: frozenset[Check]) -> None:
        if self._verifying is not None and not self._verifying.done():
            return  # the running round's rebuild will collect what is still pending
        self._verifying = asyncio.create_task(self.verify(checks), name="mirror-verification")

    async def verify(self, checks: frozenset[Check] | None = None) -> int:
        """Ask the mirrors what the snapshot still needs to know; rebuild when answers came."""
        if checks is None:
            checks = self.snapshot.pending if self.snapshot else frozenset()
        fetched = await self.verifier.run(checks)
        log.info("mirrors_verified", checks=len(checks), fetched=fetched)
        if fetched:
            self._ask_build()
        return fetched

    async def refresh_advisories(self, force: bool = False) -> bool:
        """Read the advisory feeds whose files changed; rebuild when what they say did."""
        changed = await self.advisories.refresh(force)
        if changed:
            self._ask_build()
        return changed

    async def _advisory_loop(self) -> None:
        while True:
            await asyncio.sleep(self.advisories.interval())
            try:
                await self.refresh_advisories()
            except Exception:  # the loop goes on: the last good feeds stay in use
                log.exception("advisory_refresh_failed")

    async def _reverify_loop(self) -> None:
        """Answers age out (`Verifier.due`): a rebuild then finds them pending and asks again."""
        while True:
            await asyncio.sleep(self.verifier.tick)
            if self.verifier.due():
                self._ask_build()
