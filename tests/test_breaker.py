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


def test_a_probe_goes_ahead_while_open() -> None:
    """An operator's explicit sync asks the upstream even while the breaker waits."""
    breaker = Breaker(BreakerSettings(failures=1, open_for="1h"))  # type: ignore[arg-type]
    breaker.failed(0)
    assert not breaker.allow(5)
    assert breaker.allow(5, probe=True)
    assert breaker.state == "half-open"
    breaker.failed(5)  # the probe failed: open again, for longer
    assert (breaker.state, breaker.opened_until) == ("open", 5 + 3600)  # at most max_open_for
    assert breaker.allow(6, probe=True)
    breaker.succeeded()
    assert breaker.state == "closed"


def test_new_settings_apply_to_an_open_breaker() -> None:
    slow = BreakerSettings(failures=1, open_for="1h", max_open_for="8h")  # type: ignore[arg-type]
    breaker = Breaker(slow)
    breaker.failed(100)
    assert not breaker.allow(200)
    breaker.configure(BreakerSettings(failures=1, open_for="10s", max_open_for="1m"))  # type: ignore[arg-type]
    assert not breaker.allow(109)
    assert breaker.allow(110)  # ten seconds from when it opened
    breaker.failed(110)  # a failed probe doubles the wait, within the new maximum
    assert breaker.opened_until == 130
    breaker.configure(BreakerSettings(failures=1, open_for="10s", max_open_for="15s"))  # type: ignore[arg-type]
    assert breaker.opened_until == 125
    closed = Breaker(slow)
    closed.configure(BreakerSettings(failures=5))  # type: ignore[call-arg]
    for now in range(4):
        closed.failed(now)
    assert closed.state == "closed"  # the new threshold
