"""A per-upstream circuit breaker: stop asking an upstream that keeps failing, probe it later.

closed --(`failures` failed syncs in a row)--> open --(`open_for` passed)--> half-open
half-open --(the probe sync succeeds)--> closed;  --(it fails)--> open, for twice as long
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
    opened_until: float = 0.0  # monotonic seconds
    open_for: float = field(default=0.0)

    def allow(self, now: float) -> bool:
        """May a sync send requests now? Moves open to half-open once the wait is over."""
        if self.state == "open":
            if now < self.opened_until:
                return False
            self.state = "half-open"
        return True

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
        self.opened_until = now + self.open_for
