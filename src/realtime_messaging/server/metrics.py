"""Prometheus metrics: the original design's monitoring list, plus latency histograms.

Counts that the hot paths already keep as plain integers (deliveries, connections) are read at
scrape time by a collector, so fan-out pays nothing for being measured.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..store.changefeed import Change, ChangeFeed
from .pgchanges import ChangeRouter
from .purge import PurgeStats
from .realtime import RealtimeServer
from .webhooks import Stats as WebhookStats

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Live(Collector):
    def __init__(self, realtime: RealtimeServer, router: ChangeRouter) -> None:
        self._realtime = realtime
        self._router = router
        self.feed: ChangeFeed | None = None
        self.webhooks: WebhookStats | None = None
        self.purge: PurgeStats | None = None

    def collect(self) -> Iterator[Metric]:
        realtime = self._realtime
        yield GaugeMetricFamily(
            "rtm_active_connections", "Open WebSocket connections", value=len(realtime.sessions)
        )
        yield GaugeMetricFamily(
            "rtm_active_channels",
            "Joined channels (concurrent subscriptions)",
            value=sum(len(s.channels) for s in realtime.sessions),
        )
        deliveries = CounterMetricFamily(
            "rtm_deliveries", "Messages written to clients, by kind", labels=["kind"]
        )
        deliveries.add_metric(["broadcast"], realtime.hub.deliveries)
        deliveries.add_metric(["postgres_changes"], self._router.delivered)
        yield deliveries
        yield CounterMetricFamily(
            "rtm_changes_undeliverable",
            "Changes skipped because they could not be routed (each is logged)",
            value=self._router.undeliverable,
        )
        yield CounterMetricFamily(
            "rtm_changes_degraded",
            "Changes delivered without their large or unencodable values (errors says so)",
            value=self._router.degraded,
        )
        errors = CounterMetricFamily(
            "rtm_socket_errors", "Socket-side errors, by kind", labels=["kind"]
        )
        for kind, count in sorted(realtime.errors.items()):
            errors.add_metric([kind], count)
        yield errors
        broker = realtime.broker.status()
        yield GaugeMetricFamily(
            "rtm_broker_up",
            "1 while other server processes can be reached (always 1 for one process)",
            value=int(broker.up),
        )
        moved = CounterMetricFamily(
            "rtm_broker_envelopes",
            "Envelopes between processes: published, received, dropped (not sent: Redis "
            "down or the send queue full), or malformed (received, not decodable: skipped)",
            labels=["outcome"],
        )
        moved.add_metric(["published"], broker.published)
        moved.add_metric(["received"], broker.received)
        moved.add_metric(["dropped"], broker.dropped)
        moved.add_metric(["malformed"], broker.malformed)
        yield moved
        cluster = realtime.cluster
        yield GaugeMetricFamily(
            "rtm_cluster_peers",
            "Other server processes heard from (heartbeats through the broker)",
            value=cluster.peers,
        )
        yield CounterMetricFamily(
            "rtm_cluster_peers_dead",
            "Processes declared dead (silent for RTM_PROCESS_DEAD_AFTER): their presences left",
            value=cluster.reaped,
        )
        feed = self.feed
        if feed is not None:
            yield GaugeMetricFamily(
                "rtm_change_feed_up",
                "1 while the change feed is connected",
                value=int(feed.live.is_set()),
            )
            yield GaugeMetricFamily(
                "rtm_change_feed_position", "Last change position read", value=feed.position or 0
            )
        hooks = self.webhooks
        if hooks is not None:
            yield GaugeMetricFamily(
                "rtm_webhook_outbox_pending",
                "Webhook deliveries not yet made nor given up (read every few seconds)",
                value=hooks.pending,
            )
            attempts = CounterMetricFamily(
                "rtm_webhook_attempts",
                "Webhook delivery attempts by this process: delivered, failed (every failed "
                "attempt), dead (the failed attempts after which the event was given up)",
                labels=["outcome"],
            )
            attempts.add_metric(["delivered"], hooks.delivered)
            attempts.add_metric(["failed"], hooks.failed)
            attempts.add_metric(["dead"], hooks.dead)
            yield attempts
            failing = GaugeMetricFamily(
                "rtm_webhook_consecutive_failures",
                "Consecutive failed attempts per webhook id (0: its last attempt succeeded)",
                labels=["webhook"],
            )
            for webhook, count in sorted(hooks.failing.items()):
                failing.add_metric([webhook], count)
            yield failing
        purge = self.purge
        if purge is not None:
            yield GaugeMetricFamily(
                "rtm_storage_purge_queued",
                "Stored files waiting to be deleted from the store (read every purge round)",
                value=purge.queued,
            )
            yield CounterMetricFamily(
                "rtm_storage_purged",
                "Stored files deleted from the store by this process",
                value=purge.purged,
            )
            yield CounterMetricFamily(
                "rtm_storage_purge_failures",
                "Failed deletes from the store by this process (each retried later)",
                value=purge.failed,
            )
            yield CounterMetricFamily(
                "rtm_attachments_expired",
                "Uploads never sent with a message, deleted by this process after "
                "RTM_UPLOAD_PENDING_TTL",
                value=purge.expired,
            )


class Metrics:
    def __init__(self, realtime: RealtimeServer, router: ChangeRouter) -> None:
        self.registry = CollectorRegistry()
        self._live = _Live(realtime, router)
        self.registry.register(self._live)
        self.http = Histogram(
            "rtm_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.http_errors = Counter(
            "rtm_http_errors",
            "HTTP responses with a 4xx or 5xx status",
            ["status"],
            registry=self.registry,
        )
        self.changes = Counter(
            "rtm_changes",
            "Database changes read from the feed, by table (typing and presence rates included)",
            ["table"],
            registry=self.registry,
        )
        self.delivery = Histogram(
            "rtm_change_delivery_seconds",
            "From a change being written to it being handed to subscribers' sockets",
            registry=self.registry,
            buckets=_LATENCY_BUCKETS,
        )

    def watch(self, feed: ChangeFeed) -> None:
        self._live.feed = feed

    def watch_webhooks(self, stats: WebhookStats) -> None:
        self._live.webhooks = stats

    def watch_purge(self, stats: PurgeStats) -> None:
        self._live.purge = stats

    def observing(
        self, route: Callable[[Sequence[Change]], None]
    ) -> Callable[[Sequence[Change]], None]:
        """Wrap the router's entry point: count each change and time it, then route it."""

        def deliver(changes: Sequence[Change]) -> None:
            route(changes)
            now = time.time()
            tables: Tally[str] = Tally()
            for change in changes:
                tables[change.table] += 1
                self.delivery.observe(max(0.0, now - change.changed_epoch))
            for table, count in tables.items():
                self.changes.labels(table).inc(count)

        return deliver

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.endswith("/websocket"):
            return await handler(request)
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            self.http.labels(request.method, route, str(status)).observe(
                time.perf_counter() - started
            )
            if status >= 400:
                self.http_errors.labels(str(status)).inc()

    async def handler(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), content_type="text/plain", charset="utf-8"
        )
