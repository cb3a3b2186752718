from __future__ import annotations

from gateway.breaker import Breaker
from gateway.config import BreakerSettings


def test_opens_after_consecutive_failures_then_probes_and_backs_off() -> None:
    breaker = Breaker(BreakerSettings(failures=3, open_for="10s", max_open_for="25s"))  # type: ignore[arg-type]
    for now in (0, 1):
        assert breaker.allow(now)
        breaker.failed(now)
    assert breaker.state == "closed"
    breaker.failed(2)
    assert breaker.state == "open"
    assert not breaker.allow(5)
    assert breaker.allow(12)  # the wait is over: one probe
    assert breaker.state == "half-open"
    breaker.failed(12)  # probe failed: open twice as long
    assert (breaker.state, breaker.opened_until) == ("open", 32)
    assert not breaker.allow(31)
    assert breaker.allow(32)
    breaker.failed(32)
    assert breaker.opened_until == 32 + 25  # capped by max_open_for
    assert breaker.allow(60)
    breaker.succeeded()
    assert (breaker.state, breaker.failures) == ("closed", 0)


def test_a_success_resets_the_count() -> None:
    breaker = Breaker(BreakerSettings(failures=2))  # type: ignore[call-arg]
    breaker.failed(0)
    breaker.succeeded()
    breaker.failed(1)
    assert breaker.state == "closed"
