"""A will is a publish made on a session's behalf after the session ended, so it is authorized when it
is published, not only at CONNECT: a revocation (a suspended token, a disabled device or tenant, a
deleted device, a removed CA) may have committed since, and its kick may not have reached the session
before it ended by itself. One indexed registry read per will: a will goes out only when a connection
ends without DISCONNECT, and each such end writes its disconnect to the registry anyway.

The registry, not memory, is asked: it is what every writer (the API, the CLI, another node) changes.
"""

from __future__ import annotations

from registry import Registry

from ..kp1 import topic as kp1_topic
from .identity import DeviceIdentity


async def will_authorized(registry: Registry, identity: DeviceIdentity, topic: str) -> bool:
    """The session's credential, device, tenant (and CA) are still as they were when it was verified,
    and the token the will's topic names is still one the device may use."""
    if identity.is_service:
        return await registry.service_accounts.find(identity.tenant_id, identity.device_id) is not None
    parts = kp1_topic.head(topic)
    if parts is None:
        return False
    return await registry.credentials.still_authorizes(identity.credential_id, identity.credential_version, parts[2])
