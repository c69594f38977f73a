"""Who an MQTT session is, as decided once at CONNECT and then read from memory on every packet."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from registry.models import AuthRecord, CredentialKind

IDENTITY_ATTR = "gateway.identity"
SERVICE = "service"
RETRY_LATER_ATTR = "gateway.retry_later"
"""Set by authentication when it refused for the gateway's own reasons: CONNACK 3 instead of 5."""


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    tenant_id: str
    device_id: str
    credential_id: int
    credential_kind: CredentialKind
    auth_id: str
    tokens: frozenset[str]
    """Endpoint tokens this session may use in kp1 topics: names unique within its tenant, whose topics
    the gateway's router keeps apart from every other tenant's."""
    ca_id: str | None = None
    """The trusted CA a certificate session authenticated through (closing it closes them)."""
    role: str = "device"
    """'device', or 'service' for a tenant's service account (device_id is then the account id)."""
    credential_version: int = 0
    """The credential row as verified (its updated_at): a changed credential does not open a session."""
    tenant_max_connections: int | None = None
    bearer_tokens: frozenset[str] = frozenset()
    """The part of `tokens` unique across tenants (bearer tokens): all a stock amqtt broker, whose topics
    are one space for every tenant, lets the session use."""
    tenant_max_retained_messages: int | None = None
    tenant_max_retained_bytes: int | None = None
    """The tenant's own limits as read at CONNECT (None: its share of the node's, from the settings)."""

    @property
    def is_service(self) -> bool:
        return self.role == SERVICE

    @classmethod
    def of(cls, record: AuthRecord, tokens: Iterable[tuple[str, bool]]) -> DeviceIdentity:
        """The identity a device credential gives a session; `tokens`: (token, bound) pairs."""
        tokens = list(tokens)
        return cls(
            tenant_id=record.tenant_id,
            device_id=record.device_id,
            credential_id=record.credential_id,
            credential_kind=record.kind,
            auth_id=record.auth_id,
            tokens=frozenset(token for token, _bound in tokens),
            bearer_tokens=frozenset(token for token, bound in tokens if not bound),
            ca_id=record.ca_id,
            credential_version=record.version,
            tenant_max_connections=record.tenant_max_connections,
            tenant_max_retained_messages=record.tenant_max_retained_messages,
            tenant_max_retained_bytes=record.tenant_max_retained_bytes,
        )


def identity_of(session: Any) -> DeviceIdentity | None:
    """The identity authentication gave a session (ours, or amqtt's in a stock broker)."""
    if session is None:
        return None
    value = session.attributes.get(IDENTITY_ATTR)
    return value if isinstance(value, DeviceIdentity) else None


def owner_key(identity: DeviceIdentity) -> str:
    """`<tenant>/<device>` (or `<tenant>/service:<account>`): whose sessions these are."""
    owner = f"{identity.role}:{identity.device_id}" if identity.is_service else identity.device_id
    return f"{identity.tenant_id}/{owner}"


def session_key(identity: DeviceIdentity, client_id: str) -> str:
    """Broker-side session key. Namespaced by tenant and device, so a client id chosen by one device
    can never take over, resume or wipe another device's session (ids cannot contain '/')."""
    return f"{owner_key(identity)}/{client_id}"


def owner_of(key: str) -> str:
    """The owner part of a session key (tenant and device ids contain no '/'; a client id may)."""
    tenant, owner, _client_id = key.split("/", 2)
    return f"{tenant}/{owner}"
