"""`GET /metrics`: what the instance holds and does, in Prometheus' text format (prometheus-client).

One `Metrics` per app, with its own `CollectorRegistry` (never the global one, so
several apps in one test process do not clash). Two kinds of numbers:

- Counted where they happen, cheaply: `broadcast(frames, seconds)` once per fan-out
  (never once per recipient), `slow_cut()`, `rate_limited()`, `flood_closed()`,
  `login(outcome)`, `media_call(operation, outcome, seconds)` (the breaker calls it).
- Read at scrape time (`Live`): open sockets, participants, rooms, the breaker's
  state, and the handler's own tallies of grace expiries and resumes. Nothing is
  updated on every change for them.

Metrics are not public. On the main port `/metrics` answers only clients whose
address is in `LOBBY_METRICS_ALLOW` and that no proxy forwarded (the rule `/readyz`
uses for its counts); anyone else gets 404, as if there were no such page.
`LOBBY_METRICS_PORT` adds a listener for `/metrics` alone (prometheus-client's own
server, in a thread) for a scraper on another machine; firewall it.

Several worker processes (`--workers`, with Redis): each process keeps its own
registry; counters and histograms are prometheus-client's own types, so they
work unchanged in its multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`), and the
scrape-time gauges carry the `process` label given here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from lobby.config import Settings
from lobby.web.state import state_of

LOGIN_OUTCOMES = ("ok", "wrong_password", "throttled", "busy", "unavailable")
# Fan-out of one event to every socket: microseconds for a few, milliseconds for thousands.
FANOUT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
MEDIA_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class Readings:
    """What `Live` reads at scrape time: the hub's, handler's and breaker's numbers."""

    sockets: Callable[[], int]
    participants: Callable[[], int]
    rooms: Callable[[], int]
    media_down: Callable[[], bool]
    grace_expiries: Callable[[], int]
    resumes: Callable[[], int]
    # With LOBBY_REDIS_URL: whether shared presence answers (None: no Redis configured).
    cluster_up: Callable[[], bool] | None = None


class Live(Collector):
    """The numbers read when Prometheus asks, not kept up to date on every change."""

    def __init__(self, readings: Readings, process: str) -> None:
        self.readings = readings
        self.process = process

    def collect(self) -> Iterator[Metric]:
        r, labels = self.readings, ["process"]
        for name, text, value in (
            ("lobby_sockets", "Open lobby sockets.", r.sockets()),
            ("lobby_participants", "Participants in rooms, away ones too.", r.participants()),
            ("lobby_rooms", "Rooms with at least one participant.", r.rooms()),
            ("lobby_media_breaker_open", "1 while the media breaker fails fast.", r.media_down()),
        ):
            gauge = GaugeMetricFamily(name, text, labels=labels)
            gauge.add_metric([self.process], float(value))
            yield gauge
        if r.cluster_up is not None:
            gauge = GaugeMetricFamily(
                "lobby_redis_up", "1 while shared presence in Redis answers.", labels=labels
            )
            gauge.add_metric([self.process], float(r.cluster_up()))
            yield gauge
        for name, text, count in (
            (
                "lobby_grace_expiries",
                "Participants gone after the grace period.",
                r.grace_expiries(),
            ),
            ("lobby_resumes", "Participants resumed within the grace period.", r.resumes()),
        ):
            counter = CounterMetricFamily(name, text, labels=labels)
            counter.add_metric([self.process], float(count))
            yield counter


class Metrics:
    """The app's registry and the calls that count what happens."""

    def __init__(self, backend: str, *, process: str = "main") -> None:
        self.backend = backend
        self.process = process
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._events = Counter("lobby_events_broadcast", "Events broadcast.", registry=r)
        self._frames = Counter("lobby_frames_written", "Frames written to sockets.", registry=r)
        self._fanout = Histogram(
            "lobby_fanout_seconds", "Time to write one event to every socket.",
            buckets=FANOUT_BUCKETS, registry=r,
        )  # fmt: skip
        self._slow = Counter(
            "lobby_slow_sockets_cut", "Sockets cut off for not reading.", registry=r
        )
        self._limited = Counter(
            "lobby_messages_rate_limited", "Messages answered rate_limited.", registry=r
        )
        self._flood = Counter("lobby_flood_closes", "Sockets closed for flooding.", registry=r)
        self._logins = Counter("lobby_logins", "Login attempts.", ["outcome"], registry=r)
        for outcome in LOGIN_OUTCOMES:
            self._logins.labels(outcome)  # every outcome shows, at 0 until it happens
        self._media = Counter(
            "lobby_media_calls", "Calls to the media back end.",
            ["backend", "operation", "outcome"], registry=r,
        )  # fmt: skip
        self._media_seconds = Histogram(
            "lobby_media_call_seconds", "Time a media back-end call took.",
            ["backend", "operation"], buckets=MEDIA_BUCKETS, registry=r,
        )  # fmt: skip

    def watch(self, readings: Readings) -> None:
        """Read these at every scrape (once, at start-up)."""
        self.registry.register(Live(readings, self.process))

    def broadcast(self, frames: int, seconds: float) -> None:
        """One event written to `frames` sockets in `seconds` (once per event, by the hub)."""
        self._events.inc()
        self._frames.inc(frames)
        self._fanout.observe(seconds)

    def slow_cut(self) -> None:
        self._slow.inc()

    def rate_limited(self) -> None:
        self._limited.inc()

    def flood_closed(self) -> None:
        self._flood.inc()

    def login(self, outcome: str) -> None:
        self._logins.labels(outcome).inc()

    def media_call(self, operation: str, outcome: str, seconds: float) -> None:
        self._media.labels(self.backend, operation, outcome).inc()
        self._media_seconds.labels(self.backend, operation).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)


def metrics_server(metrics: Metrics, settings: Settings) -> WSGIServer | None:
    """prometheus-client's own server for `/metrics` on `LOBBY_METRICS_PORT`, if set.

    It runs in a thread: a scrape reads lengths and flags only, never iterates
    what the loop changes. Stop it with `shutdown()` then `server_close()`.
    """
    if settings.metrics_port is None:
        return None
    server, _ = start_http_server(settings.metrics_port, settings.host, metrics.registry)
    return server


def networks(allowed: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(a, strict=False) for a in allowed)


def may_scrape(request: Request, allowed: Iterable[str]) -> bool:
    """A client in `allowed` asking directly: a request a proxy forwarded is a stranger's."""
    if "x-forwarded-for" in request.headers or "forwarded" in request.headers:
        return False
    try:
        address = ipaddress.ip_address(request.client.host if request.client else "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks(allowed))


async def metrics(request: Request) -> Response:
    """The metrics for allowed scrapers; 404 for anyone else."""
    state = state_of(request)
    if not may_scrape(request, state.settings.metrics_allow):
        return Response("Not Found", status_code=404, media_type="text/plain")
    return Response(state.metrics.text(), media_type=CONTENT_TYPE_LATEST)
