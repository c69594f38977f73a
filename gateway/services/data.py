"""Device data to the tenant's applications: 2/DCP samples, and the extensions a tenant forwards, go
out on `$gateway/data/<tenant>/<device id>/<extension>` (by device id: topics with tokens never leave
the device).

Telemetry never touches the registry: delivery is at most once (QoS 0 or 1 as the subscriber asked;
a subscriber whose queue is full loses the oldest data first, and is not disconnected for it), and
each device's last sample is kept in memory only, within `data_last_samples_max_bytes`.
"""

from __future__ import annotations

import base64
import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from registry.models import now_ms

from ..auth.identity import DeviceIdentity, owner_key
from ..auth.ratelimit import TokenBuckets
from ..kp1 import dcp
from ..kp1.budget import OverBudget, ValidationBudget
from ..kp1.payload import PayloadError
from ..kp1.reply import Kp1Error, Reply, error_reply, status_reply
from ..kp1.topic import Kp1Topic
from ..node.settings import GatewaySettings
from ..ops.metrics import Metrics
from .reach import Reach
from .topics import data_topic

RESERVED_EXTENSIONS = frozenset({dcp.EXTENSION, "epmx", "cex", "cmx"})
"""Handled by the gateway itself: a tenant cannot forward them."""
_ENTRY_OVERHEAD = 200  # bytes an entry costs beyond its sample (key, record, dict slot), roughly


@dataclass(slots=True)
class LastSample:
    received_at: int
    """ms since the epoch"""
    app_version: str
    sample: bytes
    """The last sample of the device's last data message, as JSON text."""
    messages: int
    samples: int


class DataCollection:
    def __init__(self, settings: GatewaySettings, metrics: Metrics, reach: Reach, validation: ValidationBudget) -> None:
        self._settings = settings
        self._metrics = metrics
        self._reach = reach
        self._validation = validation
        self._last: OrderedDict[str, LastSample] = OrderedDict()  # owner -> sample, least recent first
        self._last_bytes = 0
        self._buckets = TokenBuckets(settings.data_messages_per_second * 60, float(settings.data_burst))
        self.forwarded: dict[str, frozenset[str]] = {}
        """Tenant -> the extensions it forwards (`forwardExtensions`), kept current by Management."""

    # -- 2/DCP ---------------------------------------------------------------------------------------------

    def collect(self, identity: DeviceIdentity, request: Kp1Topic, payload: bytes) -> Reply | None:
        """One data message: forwarded and remembered, or refused with the reason (the reply goes to the
        device only when it gave a request id)."""
        owner = owner_key(identity)
        if not self._admit(owner):
            return error_reply(request, 429, "data rate limit reached; slow down")
        try:
            read = self._validation.reader(identity, dcp.EXTENSION)
            samples = dcp.parse_samples(self._settings, request.path, payload, read)
        except Kp1Error as exc:
            self._metrics.data_refused[str(exc.status)] += 1
            return error_reply(request, exc.status, exc.phrase)
        now = now_ms()
        raw = payload.strip()
        samples_json = raw if raw[:1] == b"[" else b"[" + raw + b"]"  # as sent: it parsed, so it is JSON
        head = json.dumps(
            {"endpointId": identity.device_id, "appVersionName": request.app_version, "receivedAt": now},
            separators=(",", ":"),
        ).encode()
        envelope = head[:-1] + b',"samples":' + samples_json + b"}"
        self._reach.publish(
            data_topic(identity.tenant_id, identity.device_id, dcp.EXTENSION), envelope, 1, droppable=True
        )
        last = raw if len(samples) == 1 and raw[:1] == b"{" else json.dumps(samples[-1]).encode()
        self._remember(owner, now, request.app_version, last, len(samples))
        self._metrics.data_messages += 1
        self._metrics.data_samples += len(samples)
        return status_reply(request)

    # -- forwarded extensions -----------------------------------------------------------------------------

    def forwards(self, identity: DeviceIdentity, extension: str) -> bool:
        return extension in self.forwarded.get(identity.tenant_id, ())

    def forward(self, identity: DeviceIdentity, request: Kp1Topic, payload: bytes) -> None:
        """A publish to an extension the tenant forwards, wrapped with who sent it. JSON payloads are
        embedded as they are; anything else as base64. Within the data limits (rate, size); what is
        over them is only counted: the device's own subscribers still get it."""
        if not self._admit(owner_key(identity)):
            return
        if len(payload) > self._settings.data_max_payload_bytes:
            self._metrics.data_refused["413"] += 1
            return
        message: dict[str, Any] = {
            "endpointId": identity.device_id,
            "appVersionName": request.app_version,
            "receivedAt": now_ms(),
            "path": request.path,
        }
        if request.request_id is not None:
            message["requestId"] = request.request_id
        read = self._validation.reader(identity, request.extension)
        try:
            message["payload"] = read(payload, self._settings.data_max_depth)
        except OverBudget:
            self._metrics.data_refused["429"] += 1
            return
        except PayloadError:
            message["payloadBase64"] = base64.b64encode(payload).decode()
        body = json.dumps(message, separators=(",", ":")).encode()
        self._reach.publish(
            data_topic(identity.tenant_id, identity.device_id, request.extension), body, 1, droppable=True
        )
        self._metrics.data_forwarded[request.extension] += 1

    def set_forwarded(self, tenant_id: str, extensions: Iterable[str]) -> None:
        wanted = frozenset(extensions)
        if wanted:
            self.forwarded[tenant_id] = wanted
        else:
            self.forwarded.pop(tenant_id, None)

    # -- the last sample of each device -------------------------------------------------------------------

    def last(self, tenant_id: str, device_id: str) -> LastSample | None:
        return self._last.get(f"{tenant_id}/{device_id}")

    def forget(self, tenant_id: str, device_id: str | None = None) -> None:
        """A deleted device (or tenant) leaves nothing behind."""
        prefix = f"{tenant_id}/"
        for owner in [
            o for o in self._last if (o == f"{tenant_id}/{device_id}" if device_id else o.startswith(prefix))
        ]:
            self._drop(owner)
        if device_id is None:
            self.forwarded.pop(tenant_id, None)

    def _remember(self, owner: str, now: int, app_version: str, sample: bytes, count: int) -> None:
        previous = self._last.pop(owner, None)
        if previous is not None:
            self._last_bytes -= len(previous.sample) + _ENTRY_OVERHEAD
        entry = LastSample(
            received_at=now,
            app_version=app_version,
            sample=sample,
            messages=(previous.messages if previous else 0) + 1,
            samples=(previous.samples if previous else 0) + count,
        )
        self._last[owner] = entry
        self._last_bytes += len(sample) + _ENTRY_OVERHEAD
        while self._last_bytes > self._settings.data_last_samples_max_bytes and self._last:
            self._metrics.limits_hit["data_last_samples_max_bytes"] += 1
            self._drop(next(iter(self._last)))

    def _drop(self, owner: str) -> None:
        entry = self._last.pop(owner)
        self._last_bytes -= len(entry.sample) + _ENTRY_OVERHEAD

    def _admit(self, owner: str) -> bool:
        if self._buckets.of(owner).take():
            return True
        self._metrics.data_refused["429"] += 1
        self._metrics.limits_hit["data_messages_per_second"] += 1
        return False
