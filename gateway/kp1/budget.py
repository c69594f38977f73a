"""What validating payloads may cost each sender (issue 17 point 3): milliseconds of the event loop
per second, per device (or service account) and per tenant, as token buckets.

Every payload is sized up on its raw bytes before it is parsed (payload.size_up: 413 over
`json_max_values`), so no single one costs much; the budgets bound how many a sender gets parsed. A
payload that finds its sender's or its tenant's budget spent is refused 429 before anything is
looked at; what sizing up and parsing took (wall time on the event loop, which is what every other
client waited) is charged to both afterwards.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..auth.identity import DeviceIdentity, owner_key
from ..auth.ratelimit import TokenBucket, TokenBuckets
from ..node.settings import GatewaySettings
from ..ops.audit import BurstLog
from ..ops.metrics import Metrics
from .payload import MAX_DEPTH, JsonReader, PayloadError, TooManyValues, parse_sized, size_up


class OverBudget(PayloadError):
    """The sender (or its tenant) spent its validation budget: refused without being parsed."""

    status = 429


class ValidationBudget:
    def __init__(self, settings: GatewaySettings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._senders = TokenBuckets(settings.validation_ms_per_second * 60, settings.validation_burst_ms)
        self._tenants = TokenBuckets(settings.validation_tenant_ms_per_second * 60, settings.validation_tenant_burst_ms)
        self._packets = TokenBuckets(settings.reader_ms_per_second * 60, settings.reader_burst_ms)
        self._bytes = TokenBuckets(settings.reader_bytes_per_second * 60, settings.reader_burst_bytes)
        self._log = BurstLog("validation_over_budget", level=logging.WARNING)

    def packet_work(self, identity: DeviceIdentity) -> TokenBucket:
        """The bucket a device's (or account's) connections charge what their packets cost them beyond
        the cheap (mqtt/connection.py): all its connections share it."""
        return self._packets.of(owner_key(identity))

    def packet_bytes(self, identity: DeviceIdentity) -> TokenBucket:
        """The bucket of bytes a device's (or account's) connections may send: receiving them costs the
        event loop what they weigh, whatever they hold."""
        return self._bytes.of(owner_key(identity))

    def reader(self, identity: DeviceIdentity, where: str) -> JsonReader:
        """parse_json for this sender's payloads, counted under `where` (an extension, `commands`)."""
        owner, tenant = owner_key(identity), identity.tenant_id

        def read(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
            return self.parse(owner, tenant, where, data, max_depth)

        return read

    def parse(self, owner: str, tenant: str, where: str, data: bytes, max_depth: int = MAX_DEPTH) -> Any:
        """Raises OverBudget (429), TooManyValues (413) or another PayloadError (400)."""
        sender, shared = self._senders.of(owner), self._tenants.of(tenant)
        for bucket, limit in ((sender, "validation_ms_per_second"), (shared, "validation_tenant_ms_per_second")):
            if not bucket.in_credit():
                self._metrics.limits_hit[limit] += 1
                self._log.note(owner, tenant=tenant, sender=owner.partition("/")[2], limit=limit)
                raise OverBudget("payload validation budget spent; slow down")
        started = time.perf_counter()
        try:
            sized = size_up(data, max_depth, self._settings.json_max_values)
            self._metrics.payloads_parsed[where] += 1
            return parse_sized(sized)
        except TooManyValues:
            self._metrics.limits_hit["json_max_values"] += 1
            raise
        finally:
            spent = (time.perf_counter() - started) * 1000
            sender.charge(spent)
            shared.charge(spent)
