"""A per-upstream circuit breaker: stop asking an upstream that keeps failing, probe it later.

closed --(`failures` failed syncs in a row)--> open --(`open_for` passed)--> half-open
half-open --(the probe sync succeeds)--> closed;  --(it fails)--> open, for twice as long

An operator's explicit sync is a probe: it goes ahead while the breaker is open, as the probe
at the end of the wait would. A reload's new settings apply at once, to an open breaker too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gateway.config import BreakerSettings

State = Literal["closed", "open", "half-open"]


@dataclass(slots=True)
class Breaker:
    settings: BreakerSettings
    state: State = "closed"
    failures: int = 0  # consecutive
    opened_at: float = 0.0  # monotonic seconds
    opened_until: float = 0.0
    open_for: float = field(default=0.0)

    def allow(self, now: float, probe: bool = False) -> bool:
        """May a sync send requests now? Moves open to half-open once the wait is over, or
        at once for a probe (an operator's request)."""
        if self.state == "open":
            if now < self.opened_until and not probe:
                return False
            self.state = "half-open"
        return True

    def configure(self, settings: BreakerSettings) -> None:
        """New settings (a reload): an open breaker waits the new `open_for` from when it
        opened, or what it had come to after failed probes, bounded by the new maximum."""
        old, self.settings = self.settings, settings
        if self.state == "closed" or settings == old:
            return
        grown = self.open_for / old.open_for if old.open_for else 1.0
        self.open_for = min(settings.open_for * grown, settings.max_open_for)
        self.opened_until = self.opened_at + self.open_for

    def succeeded(self) -> None:
        self.state = "closed"
        self.failures = 0
        self.open_for = 0.0

    def failed(self, now: float) -> None:
        self.failures += 1
        if self.state == "half-open":
            self.open_for = min(self.open_for * 2, self.settings.max_open_for)
            self._open(now)
        elif self.state == "closed" and self.failures >= self.settings.failures:
            self.open_for = self.settings.open_for
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = "open"
        self.opened_at = now
        self.opened_until = now + self.open_for
