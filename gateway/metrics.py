"""Prometheus metrics: request counters and latency, plus gauges read from the live state.

Each app has its own registry (no global state); `/metrics` renders it in the text format.
Labels are bounded: routes are endpoint kinds, views and upstreams come from the config.

With `serve --workers N` a scrape reaches any one worker, so each answers for all of them:
every worker writes what it counted (requests, latencies, syncs) to the run's directory
every second (`Tallies`), and a scrape adds the others' last to its own. Counters never go
back whichever worker answers; a request is at most a second late in the others' answers.
"""

from __future__ import annotations

import asyncio
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from gateway.feed import Feed
from gateway.refresher import Refresher
from gateway.status import BREAKER_STATES, UpstreamStatus

if TYPE_CHECKING:
    from gateway.sharing import Shared

log = structlog.get_logger("gateway.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SYNC_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
SHARE_EVERY = 1.0  # seconds between a worker's tallies written for the others


class _StateCollector(Collector):
    """Gauges and totals read from the refresher's published status at scrape time."""

    def __init__(self, refresher: Refresher) -> None:
        self.refresher = refresher

    def collect(self) -> Iterator[Metric]:
        now = datetime.now(UTC)
        status = self.refresher.status()
        upstreams = status.upstreams
        yield _per_upstream("mcp_gateway_upstream_entries", "Entries held per upstream",
                            upstreams, lambda u: u.entries)  # fmt: skip
        ages = GaugeMetricFamily(
            "mcp_gateway_upstream_data_age_seconds",
            "Seconds since each upstream's data was last known good",
            labels=["upstream"],
        )
        for upstream in upstreams:
            age = upstream.data_age(now)
            if age is not None:
                ages.add_metric([upstream.name], age)
        yield ages
        yield _per_upstream("mcp_gateway_upstream_stale", "1 while an upstream's syncs fail",
                            upstreams, lambda u: float(u.stale))  # fmt: skip
        breaker = GaugeMetricFamily(
            "mcp_gateway_upstream_breaker_state",
            "Circuit breaker state per upstream (1 for the current state)",
            labels=["upstream", "state"],
        )
        for upstream in upstreams:
            for state in BREAKER_STATES:
                breaker.add_metric([upstream.name, state], float(upstream.breaker_state == state))
        yield breaker
        totals: tuple[tuple[str, str, Callable[[UpstreamStatus], int]], ...] = (
            ("mcp_gateway_upstream_sync_failures", "Failed syncs per upstream",
             lambda u: u.failures_total),
            ("mcp_gateway_upstream_skipped_entries", "Entries skipped as invalid, per upstream",
             lambda u: u.skipped_total),
            ("mcp_gateway_upstream_mass_drops_held", "Syncs held by the mass-drop guard",
             lambda u: u.held_total),
        )  # fmt: skip
        for name, help_text, read in totals:
            family = CounterMetricFamily(name, help_text, labels=["upstream"])
            for upstream in upstreams:
                family.add_metric([upstream.name], read(upstream))
            yield family
        entries = GaugeMetricFamily(
            "mcp_gateway_view_entries", "Versions served per view (deleted excluded)",
            labels=["view"],
        )  # fmt: skip
        hidden = GaugeMetricFamily(
            "mcp_gateway_view_hidden_entries",
            "Versions a view does not serve, by reason (denied, cooldown, stale, ...)",
            labels=["view", "reason"],
        )
        advised = GaugeMetricFamily(
            "mcp_gateway_view_advisory_versions",
            "Versions a view serves by what the advisory feeds say: present (an advisory "
            "affects a package), absent, unknown (no feed could tell)",
            labels=["view", "state"],
        )
        signed = GaugeMetricFamily(
            "mcp_gateway_view_signal_versions",
            "Versions a view serves by signal (signature, provenance) and its state at the "
            "view's mirror: verified, present, absent, invalid, unknown",
            labels=["view", "signal", "state"],
        )
        verified = GaugeMetricFamily(
            "mcp_gateway_mirror_verification_packages",
            "Served packages by mirror verification result, over all views",
            labels=["result"],
        )
        for view in status.views:
            entries.add_metric([view.name], view.entries)
            for reason, count in view.hidden:
                hidden.add_metric([view.name, reason], count)
            for state, count in view.advisories:
                advised.add_metric([view.name, state], count)
            for (signal, state), count in view.signals:
                signed.add_metric([view.name, signal, state], count)
        for result, count in status.verification:
            verified.add_metric([result], count)
        yield entries
        yield hidden
        yield advised
        yield signed
        yield verified
        reload_failed = GaugeMetricFamily(
            "mcp_gateway_config_reload_failed", "1 while the last config reload was refused"
        )
        reload_failed.add_metric([], float(status.reload_error is not None))
        yield reload_failed


def _per_upstream(
    name: str,
    help_text: str,
    upstreams: tuple[UpstreamStatus, ...],
    read: Callable[[UpstreamStatus], float],
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=["upstream"])
    for upstream in upstreams:
        family.add_metric([upstream.name], read(upstream))
    return family


# What a tallies file may hold (read as hostile): labels of the shapes the gateway makes
# (routes are endpoint kinds; upstream names are the config's), counts that are counts.
_Label = Annotated[str, StringConstraints(pattern=r"\A[A-Za-z0-9_.-]{1,64}\z")]
_Count = Annotated[int, Field(ge=0, le=2**53)]
_Amount = Annotated[float, Field(ge=0, le=2**53, allow_inf_nan=False)]
_Buckets = Annotated[list[_Amount], Field(max_length=64)]
_MANY = 4096  # label sets in one file, at most
_le: Callable[[float], str] = floatToGoString  # a bucket's bound as Prometheus spells it


class Tallies(BaseModel):
    """What one worker counted, as it writes it for the others (read as hostile: exact
    shapes and bounds; bucket lists not as long as this version's are left out)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    # route, status, count
    requests: Annotated[list[tuple[_Label, Annotated[int, Field(ge=100, le=599)], _Count]],
                        Field(max_length=_MANY)]  # fmt: skip
    # route, the bucket counts then the sum
    latency: Annotated[list[tuple[_Label, _Buckets]], Field(max_length=_MANY)]
    # upstream, outcome, likewise
    syncs: Annotated[list[tuple[_Label, _Label, _Buckets]], Field(max_length=_MANY)]


def _histogram(
    family: HistogramMetricFamily, labels: list[str], bounds: tuple[float, ...], counts: list[float]
) -> None:
    cumulative: float = 0.0
    buckets: list[tuple[str, float]] = []
    for bound, hits in zip(bounds, counts, strict=False):
        cumulative += hits
        buckets.append((_le(bound), cumulative))
    cumulative += counts[len(bounds)]
    buckets.append(("+Inf", cumulative))
    family.add_metric(labels, buckets, sum_value=counts[-1])


def _added(into: dict[Any, list[float]], key: object, counts: list[float], size: int) -> None:
    if len(counts) != size:  # not of these buckets: another version's, left out
        return
    known = into.get(key)
    into[key] = counts[:] if known is None else [a + b for a, b in zip(known, counts, strict=True)]


class _CountsCollector(Collector):
    """Requests, their latency and the syncs: this worker's, plus the other workers' last."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        counted: dict[tuple[str, int], int] = {}
        latency: dict[str, list[float]] = {}
        syncs: dict[tuple[str, str], list[float]] = {}
        for other in self.metrics.counted():
            for route, status, count in other.requests:
                counted[(route, status)] = counted.get((route, status), 0) + count
            for route, counts in other.latency:
                _added(latency, route, counts, len(LATENCY_BUCKETS) + 2)
            for upstream, outcome, counts in other.syncs:
                _added(syncs, (upstream, outcome), counts, len(SYNC_BUCKETS) + 2)
        requests = CounterMetricFamily(
            "mcp_gateway_requests", "HTTP requests by route and status", labels=["route", "status"]
        )
        for (route, status), count in sorted(counted.items()):
            requests.add_metric([route, str(status)], count)
        yield requests
        family = HistogramMetricFamily(
            "mcp_gateway_request_duration_seconds", "Time to answer, by route", labels=["route"]
        )
        for route, counts in sorted(latency.items()):
            _histogram(family, [route], LATENCY_BUCKETS, counts)
        yield family
        family = HistogramMetricFamily(
            "mcp_gateway_upstream_sync_duration_seconds", "Duration of each upstream sync",
            labels=["upstream", "outcome"],
        )  # fmt: skip
        for (upstream, outcome), counts in sorted(syncs.items()):
            _histogram(family, [upstream, outcome], SYNC_BUCKETS, counts)
        yield family


class Metrics:
    """The metrics of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Request counts and latencies are plain counters on the event loop (no locks: this is
        # every request's hot path), exported as Prometheus families at scrape time.
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, list[float]] = {}  # route -> bucket counts..., sum
        self.syncs: dict[tuple[str, str], list[float]] = {}  # (upstream, outcome) -> likewise
        self._shared: Shared | None = None
        # With `--workers`: what this worker last wrote for the others' scrapes (see `counted`)
        self._published: Tallies | None = None
        self._published_taken = 0
        self._taking = 0
        self._publishing = threading.Lock()
        self._collector: _StateCollector | None = None
        self.registry.register(_CountsCollector(self))  # collected once here (described)

    def watch(self, refresher: Refresher) -> None:
        """Read gauges from this refresher, and observe its syncs."""
        if self._collector is not None:
            self.registry.unregister(self._collector)
        self._collector = _StateCollector(refresher)
        self.registry.register(self._collector)
        refresher.sync_listeners.append(self.observe_sync)

    def observe_sync(self, feed: Feed, ok: bool) -> None:
        if feed.last_duration is not None:
            key = (feed.name, "ok" if ok else "failed")
            counts = self.syncs.get(key)
            if counts is None:
                counts = self.syncs[key] = [0.0] * (len(SYNC_BUCKETS) + 2)
            counts[bisect_left(SYNC_BUCKETS, feed.last_duration)] += 1
            counts[-1] += feed.last_duration

    def tallies(self) -> Tallies:
        """What this worker counted, for the others' scrapes."""
        return Tallies(
            requests=[(route, status, count) for (route, status), count in self.requests.items()],
            latency=[(route, counts[:]) for route, counts in self.latency.items()],
            syncs=[(*key, counts[:]) for key, counts in self.syncs.items()],
        )

    def counted(self) -> list[Tallies]:
        """What a scrape answers: this worker's tallies, and with `--workers` the others' as
        they last wrote them. This worker's own are written first, and it answers with what
        it wrote (none yet: nothing of its own), so the next scrape, whichever worker it
        reaches, reads at least what this one answered: no counter goes back."""
        if self._shared is None:
            return [self.tallies()]
        self._publish(self._shared, *self._taken())
        found = [] if self._published is None else [self._published]
        for worker, data in self._shared.tallies():
            try:
                found.append(Tallies.model_validate_json(data))
            except ValidationError:
                log.error("shared_metrics_invalid", worker=worker)
        return found

    def _taken(self) -> tuple[Tallies, int]:
        """This worker's tallies now, numbered in the order they were taken (on the loop)."""
        self._taking += 1
        return self.tallies(), self._taking

    def _publish(self, shared: Shared, tallies: Tallies, taken: int) -> None:
        """Write tallies for the others' scrapes, unless newer ones are written already (the
        loop's second-by-second write may wait in a busy thread pool while a scrape writes).
        Blocking: the writes of the loop and of a worker thread take turns."""
        with self._publishing:
            if taken <= self._published_taken:  # taken from 1 on: 0 is none written yet
                return
            if shared.note_tallies(tallies.model_dump_json().encode()):
                self._published, self._published_taken = tallies, taken

    def answer_for(self, shared: Shared) -> None:
        """Scrapes add the tallies the other workers of this run wrote."""
        self._shared = shared

    async def share(self, shared: Shared) -> None:
        """Answer scrapes for every worker: write this one's tallies every second (when
        they changed), and read the others' at each scrape. Runs until cancelled."""
        self.answer_for(shared)
        written = None
        while True:
            now, taken = self._taken()
            if now != written:
                await asyncio.to_thread(self._publish, shared, now, taken)
                written = now
            await asyncio.sleep(SHARE_EVERY)

    def observe_request(self, route: str, status: int, elapsed: float) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        counts = self.latency.get(route)
        if counts is None:
            counts = self.latency[route] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        counts[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
        counts[-1] += elapsed

    def render(self) -> bytes:
        return generate_latest(self.registry)
