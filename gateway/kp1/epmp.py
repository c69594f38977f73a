"""10/EPMP: endpoint metadata over `kp1/<app version>/epmx/<token>/...` (docs/kp1-epmp.md).

Replies go to `<request topic>/status` (success) or `/error` (`{"statusCode", "reasonPhrase"}`), only
when the request carries a request id. Writes happen inside one registry transaction (see
registry/metadata.py), so a refused request (403, 413) changes nothing. A device writing faster than
`epmp_writes_per_second` (after a burst of `epmp_write_burst`) gets 429 before anything is parsed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from registry import Registry
from registry.errors import Conflict
from registry.metadata import canonical

from ..auth.identity import DeviceIdentity
from ..node.settings import GatewaySettings
from ..ops.metrics import Metrics
from .budget import ValidationBudget
from .payload import MAX_DEPTH, JsonReader, PayloadError
from .reply import Kp1Error, Reply, answered, status_reply
from .topic import Kp1Topic
from .whitelist import KEY_PATTERN, AppVersionRefused, KeyAccess, Whitelist
from .write_rate import WriteRate

log = logging.getLogger(__name__)


Resource = Callable[["Epmp", DeviceIdentity, KeyAccess, bytes, JsonReader], Awaitable[bytes]]
"""(epmp, identity, access, payload, read): `read` gives the payload parsed, already when it is not empty."""


def _keys_array(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise Kp1Error(400, f"{what} must be a non-empty JSON array of key names")
    if not all(isinstance(k, str) for k in value):
        raise Kp1Error(400, f"{what} must contain only strings")
    if len(set(value)) != len(value):
        raise Kp1Error(400, f"{what} must not repeat a key")
    for key in value:
        _check_key(key)
    return value


def _check_key(key: str) -> None:
    if not KEY_PATTERN.fullmatch(key):
        raise Kp1Error(400, f"invalid key name {key!r}: letters, digits and '_' only")


def _object(payload: bytes, read: JsonReader) -> dict[str, Any]:
    value = _json(payload, read)
    if not isinstance(value, dict) or not value:
        raise Kp1Error(400, "payload must be a JSON object with at least one property")
    for key in value:
        _check_key(key)
    return value


def _json(payload: bytes, read: JsonReader) -> Any:
    try:
        return read(payload)
    except PayloadError as exc:
        raise Kp1Error(exc.status, str(exc)) from None


def _already(value: Any) -> JsonReader:
    """A reader that gives back what was parsed before."""

    def read(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
        return value

    return read


def check_limits(settings: GatewaySettings, metadata: dict[str, Any]) -> dict[str, Any]:
    """The configured limits on a device's whole metadata; 413 over any of them."""
    if len(metadata) > settings.epmp_max_keys:
        raise Kp1Error(413, f"more than {settings.epmp_max_keys} metadata keys")
    for key, value in metadata.items():
        if len(key) > settings.epmp_max_key_length:
            raise Kp1Error(413, f"key {key[:32]!r}... longer than {settings.epmp_max_key_length} characters")
        if len(canonical(value).encode()) > settings.epmp_max_value_bytes:
            raise Kp1Error(413, f"value of {key!r} over {settings.epmp_max_value_bytes} bytes")
    return metadata


async def change_metadata(
    registry: Registry,
    settings: GatewaySettings,
    tenant_id: str,
    device_id: str,
    mutate: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    """Devices (10/EPMP) and operators (API) change metadata through here: limits, one transaction, event."""
    await registry.metadata.change(
        tenant_id, device_id, lambda current: check_limits(settings, mutate(current)), node=settings.node_id
    )


def _forbid(keys: list[str] | dict[str, Any], allowed: Callable[[str], bool], verb: str) -> None:
    restricted = sorted(k for k in keys if not allowed(k))
    if restricted:
        raise Kp1Error(403, f"not allowed to {verb} key(s): {', '.join(restricted)}")


class Epmp:
    def __init__(
        self,
        registry: Registry,
        settings: GatewaySettings,
        whitelist: Whitelist,
        validation: ValidationBudget,
        metrics: Metrics | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.whitelist = whitelist
        self._metrics = metrics or Metrics()
        self._write_rate = WriteRate(settings.epmp_writes_per_second, settings.epmp_write_burst)
        self.validation = validation

    async def handle(self, identity: DeviceIdentity, request: Kp1Topic, payload: bytes) -> Reply | None:
        return await answered(request, self._serve(identity, request, payload), "10/EPMP")

    async def _serve(self, identity: DeviceIdentity, request: Kp1Topic, payload: bytes) -> Reply | None:
        resource = RESOURCES.get(request.path)
        if resource is None:
            raise Kp1Error(404, f"unknown resource {request.path or '(empty)'!r}")
        if resource in WRITES and not self._write_rate.admit(identity):
            self._metrics.limits_hit["epmp_writes_per_second"] += 1
            raise Kp1Error(429, "metadata write rate limit reached; slow down")
        if len(payload) > self.settings.epmp_max_payload_bytes:
            raise Kp1Error(413, f"payload over {self.settings.epmp_max_payload_bytes} bytes")
        read = self._reader(identity)
        if payload.strip() and resource is not Epmp.get_keys:  # sized up and parsed before the registry is read
            read = _already(_json(payload, read))
        access = await self._access(identity, request.app_version)
        return status_reply(request, await resource(self, identity, access, payload, read))

    async def _access(self, identity: DeviceIdentity, app_version: str) -> KeyAccess:
        """What the device may read and write under the topic's app version (the whitelist decides whether
        it may use that version at all). A change is recorded, with an appversion-updated event, before
        the request is served, so the request's own events carry the version it was served under."""
        for _attempt in range(2):  # once more if an operator changed the app version meanwhile
            device = await self.registry.devices.get(identity.tenant_id, identity.device_id)
            try:
                access = self.whitelist.admit(identity.tenant_id, device.app_version, app_version)
            except AppVersionRefused as exc:
                raise Kp1Error(exc.status, exc.phrase) from None
            if app_version == device.app_version:
                return access
            try:
                await self.registry.devices.set_app_version(
                    identity.tenant_id,
                    identity.device_id,
                    app_version,
                    expected=device.app_version,
                    node=self.settings.node_id,
                )
            except Conflict:
                continue
            return access
        raise Kp1Error(409, "the app version changed concurrently; retry")

    def _reader(self, identity: DeviceIdentity) -> JsonReader:
        return self.validation.reader(identity, self.settings.epmp_extension)

    async def _change(self, identity: DeviceIdentity, mutate: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        await change_metadata(self.registry, self.settings, identity.tenant_id, identity.device_id, mutate)

    # -- resources ----------------------------------------------------------------------------------

    async def get_keys(self, identity: DeviceIdentity, access: KeyAccess, payload: bytes, read: JsonReader) -> bytes:
        stored = await self.registry.metadata.get(identity.tenant_id, identity.device_id)
        return json.dumps(sorted(k for k in stored if access.readable(k))).encode()

    async def get(self, identity: DeviceIdentity, access: KeyAccess, payload: bytes, read: JsonReader) -> bytes:
        wanted: list[str] | None = None
        if payload.strip():
            request = _json(payload, read)
            if not isinstance(request, dict) or set(request) - {"keys"}:
                raise Kp1Error(400, 'payload must be empty, {} or {"keys": [...]}')
            if "keys" in request:
                wanted = _keys_array(request["keys"], "'keys'")
                _forbid(wanted, access.readable, "read")
        stored = await self.registry.metadata.get(identity.tenant_id, identity.device_id)
        keys = wanted if wanted is not None else [k for k in stored if access.readable(k)]
        return json.dumps({k: stored[k] for k in sorted(keys) if k in stored}, separators=(",", ":")).encode()

    async def update(self, identity: DeviceIdentity, access: KeyAccess, payload: bytes, read: JsonReader) -> bytes:
        new = _object(payload, read)
        _forbid(new, access.writable, "write")
        # full replace of what the client may write; everything else stays as it is
        await self._change(identity, lambda cur: {**{k: v for k, v in cur.items() if not access.writable(k)}, **new})
        return b""

    async def update_keys(self, identity: DeviceIdentity, access: KeyAccess, payload: bytes, read: JsonReader) -> bytes:
        new = _object(payload, read)
        _forbid(new, access.writable, "write")
        await self._change(identity, lambda cur: {**cur, **new})
        return b""

    async def delete_keys(self, identity: DeviceIdentity, access: KeyAccess, payload: bytes, read: JsonReader) -> bytes:
        keys = _keys_array(_json(payload, read), "payload")
        _forbid(keys, access.writable, "delete")
        await self._change(identity, lambda cur: {k: v for k, v in cur.items() if k not in keys})
        return b""


RESOURCES: dict[str, Resource] = {
    "/get/keys": Epmp.get_keys,
    "/get": Epmp.get,
    "/update": Epmp.update,
    "/update/keys": Epmp.update_keys,
    "/delete/keys": Epmp.delete_keys,
}
WRITES = frozenset({Epmp.update, Epmp.update_keys, Epmp.delete_keys})
