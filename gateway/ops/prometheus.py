"""`GET /metrics`: the gateway's counters in the Prometheus text format.

The counters live in one place, gateway/ops/metrics.py (what `GET /v1/metrics` shows as JSON); a
collector reads them at scrape time, so nothing is counted twice. Each Gateway has its own
CollectorRegistry (several run in one test process). What needs the registry (the event backlog)
is read before the scrape, asynchronously, since collectors are synchronous.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .metrics import Metrics

if TYPE_CHECKING:
    from registry.outbox import OutboxUsage

    from ..node.runtime import Gateway

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REGISTRY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled(name: str, doc: str, labels: list[str], values: Mapping[Any, float]) -> CounterMetricFamily:
    """`values`: label values (a tuple, one per label) -> count."""
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


class GatewayCollector(Collector):
    def __init__(self, gateway: Gateway, metrics: Metrics) -> None:
        self._gateway = gateway
        self._metrics = metrics
        self._started = time.time()
        self.backlog: dict[str, tuple[int, int]] = {}
        """tenant -> (undelivered events, oldest created_at ms): refreshed before each scrape."""
        self.outbox: dict[str, OutboxUsage] = {}
        """tenant -> what its outbox holds and has coalesced or dropped: refreshed before each scrape."""

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        yield from self._connected_sessions()
        connects = {("accepted", "ok"): float(m.connects_accepted)}
        connects |= {("refused", reason): float(n) for reason, n in m.connects_refused.items()}
        yield _labelled("gateway_connects", "CONNECTs by outcome and reason", ["outcome", "reason"], connects)
        yield _labelled(
            "gateway_disconnects", "Sessions ended, by reason", ["reason"], {(k,): v for k, v in m.disconnects.items()}
        )
        yield _counter("gateway_auto_provisioned_devices", "Devices created by auto-provisioning", m.auto_provisioned)
        yield _labelled(
            "gateway_kp1_requests",
            "1/KP requests answered, by extension, resource and 1/KP status (none: no request id)",
            ["extension", "resource", "status"],
            {k: float(v) for k, v in m.kp1_requests.items()},
        )
        yield _counter("gateway_kp1_requests_dropped", "1/KP requests refused over epmp_max_pending", m.epmp_dropped)
        yield _counter("gateway_messages_received", "PUBLISH packets received from clients", m.messages_in)
        yield _counter("gateway_received_bytes", "MQTT bytes received from clients", m.bytes_in)
        yield _counter("gateway_messages_sent", "PUBLISH packets written to clients", m.messages_out)
        yield _counter("gateway_sent_bytes", "MQTT bytes written to clients", m.bytes_out)
        yield _counter("gateway_messages_dropped", "Messages dropped for a slow or full session", m.messages_dropped)
        yield _counter("gateway_publishes_denied", "PUBLISHes refused by the topic ACL", m.publishes_denied)
        yield _counter("gateway_subscriptions_denied", "Subscriptions refused by the topic ACL", m.subscriptions_denied)
        yield _counter("gateway_sessions_kicked", "Sessions closed by revocation, disable or delete", m.sessions_kicked)
        yield _counter("gateway_wills_refused", "Wills not published: revoked since CONNECT", m.wills_refused)
        yield _labelled(
            "gateway_limits_hit",
            "Times a configured bound was reached, by setting",
            ["limit"],
            {(k,): v for k, v in m.limits_hit.items()},
        )
        yield _labelled(
            "gateway_payloads_parsed",
            "Device and service-account payloads that reached the JSON parser, by extension",
            ["extension"],
            {(k,): v for k, v in m.payloads_parsed.items()},
        )
        yield _counter("gateway_data_messages", "2/DCP data messages accepted", m.data_messages)
        yield _counter("gateway_data_samples", "2/DCP samples accepted", m.data_samples)
        refused = {(k,): float(v) for k, v in m.data_refused.items()}
        yield _labelled("gateway_data_refused", "2/DCP messages refused, by status", ["status"], refused)
        yield _counter("gateway_commands_invoked", "11/CEP commands invoked", m.commands_invoked)
        yield _labelled(
            "gateway_commands_finished",
            "11/CEP commands ended, by state",
            ["state"],
            {(k,): v for k, v in m.commands_finished.items()},
        )
        yield from self._audit()
        yield from self._events()
        uptime = GaugeMetricFamily("gateway_uptime_seconds", "Seconds since this gateway started")
        uptime.add_metric([], time.time() - self._started)
        yield uptime
        info = GaugeMetricFamily("gateway_info", "This gateway node", labels=["node"])
        info.add_metric([self._gateway.settings.node_id], 1)
        yield info

    def _audit(self) -> Iterator[Metric]:
        m = self._metrics
        yield _labelled(
            "gateway_api_refused",
            "API requests without the admin token refused, by reason",
            ["reason"],
            {(k,): v for k, v in m.api_refused.items()},
        )
        yield _labelled(
            "gateway_audit_refusals_counted",
            "Refused writes counted per source and minute in the audit trail, not a row each, by origin",
            ["origin"],
            {(k,): v for k, v in m.audit_counted.items()},
        )
        yield _counter(
            "gateway_audit_refusals_folded", "Of those, counted as (others) past the sources a minute", m.audit_folded
        )
        yield _labelled(
            "gateway_audit_rows_pruned",
            "Audit rows deleted over their row bound before their age, by table",
            ["table"],
            {(k,): v for k, v in m.audit_pruned.items()},
        )

    def _connected_sessions(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "gateway_sessions_connected", "Device sessions connected now, by tenant", labels=["tenant"]
        )
        broker = self._gateway.broker
        if broker is not None:
            for tenant, count in sorted(broker.table.tenant_connected.counts().items()):
                family.add_metric([tenant], count)
        yield family

    def _events(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "gateway_event_backlog", "Undelivered events of tenants with a service account", labels=["tenant"]
        )
        lag = GaugeMetricFamily(
            "gateway_event_delivery_lag_seconds", "Age of the oldest undelivered event, by tenant", labels=["tenant"]
        )
        now = time.time()
        for tenant, (count, oldest_ms) in sorted(self.backlog.items()):
            backlog.add_metric([tenant], count)
            lag.add_metric([tenant], max(0.0, now - oldest_ms / 1000))
        yield backlog
        yield lag
        held = GaugeMetricFamily(
            "gateway_event_outbox_bytes",
            "Bytes of a tenant's outbox (undelivered events and delivered ones not yet pruned), within"
            " event_backlog_max_bytes",
            labels=["tenant"],
        )
        for tenant, usage in sorted(self.outbox.items()):
            held.add_metric([tenant], usage.bytes)
        yield held
        yield _labelled(
            "gateway_events_coalesced",
            "Events folded into a newer one of the same kind and device (over half the tenant's bound)",
            ["tenant"],
            {(t,): u.coalesced_total for t, u in self.outbox.items()},
        )
        yield _labelled(
            "gateway_events_dropped",
            "Undelivered events dropped, oldest first, at the tenant's bound (see its events/dropped event)",
            ["tenant"],
            {(t,): u.dropped_total for t, u in self.outbox.items()},
        )


class PrometheusExporter:
    """One per Gateway: its collectors, and the histogram the registry's calls feed."""

    def __init__(self, gateway: Gateway, metrics: Metrics) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._collector = GatewayCollector(gateway, metrics)
        self.registry.register(self._collector)
        self._gateway = gateway
        self.registry_seconds = Histogram(
            "gateway_registry_call_seconds",
            "Registry calls, waiting for the write lock included, by kind",
            ["kind"],
            buckets=REGISTRY_BUCKETS,
            registry=self.registry,
        )

    def observe_registry(self, kind: str, seconds: float) -> None:
        self.registry_seconds.labels(kind).observe(seconds)

    async def scrape(self) -> bytes:
        self._collector.backlog = await self._gateway.registry.outbox.backlog()
        self._collector.outbox = await self._gateway.registry.outbox.usage()
        return generate_latest(self.registry)
