"""What the registry, the metrics and the audit log learn of a connection: refused, connected (recorded
inside the registry transaction that re-checks the credential), disconnected and why."""

from __future__ import annotations

import logging

from ..auth.identity import DeviceIdentity, identity_of
from ..node.context import GatewayServices
from ..ops.audit import BurstLog, audit
from .session import ClientSession

log = logging.getLogger(__name__)

# Refusals that are a configured limit, not a credential problem: counted in `limitsHit` too.
LIMIT_REFUSALS = frozenset(
    {
        "max_connections",
        "max_pending_connects_per_address",
        "max_sessions_per_device",
        "tenant_max_connections",
        "tenant_connections_share",
    }
)
# A tenant's fleet refused at its cap reconnects in a loop (1,000 CONNECTs/s measured): a line per
# tenant and limit for the burst, and a count a minute later, not a line each.
TENANT_CAP_REFUSALS = frozenset({"tenant_max_connections", "tenant_connections_share"})


class Presence:
    def __init__(self, services: GatewayServices) -> None:
        self._services = services
        self._cap_refused = BurstLog("connect_refused", level=logging.WARNING)
        self.shutting_down = False
        """Set by shutdown: every session's end is then written at once (`recover_node`), not one by one."""

    async def record_connect(self, session: ClientSession, identity: DeviceIdentity, connected_at: int) -> bool | None:
        """True: recorded. False: the credential, device or tenant was revoked since it was verified.
        None: the registry failed (logged)."""
        try:
            if identity.is_service:  # not a device: no presence; still re-checked against a deletion
                account = await self._services.registry.service_accounts.find(identity.tenant_id, identity.device_id)
                return account is not None
            return await self._services.registry.connections.record_connect(
                session_key=session.key,
                tenant_id=identity.tenant_id,
                device_id=identity.device_id,
                node=self._services.settings.node_id,
                client_id=session.client_id,
                remote_address=session.remote_address,
                credential_id=identity.credential_id,
                credential_version=identity.credential_version,
                connected_at=connected_at,
            )
        except Exception:
            log.exception("could not record the connect of %s", session.key)
            return None

    def refused(
        self,
        reason: str,
        peer: tuple[str, int] | None,
        detail: str | None = None,
        *,
        identity: DeviceIdentity | None = None,
    ) -> None:
        self._services.metrics.connect_refused(reason, identity.tenant_id if identity else None)
        if reason in LIMIT_REFUSALS:
            self._services.metrics.limits_hit[reason] += 1
        if reason in TENANT_CAP_REFUSALS and identity is not None:
            self._cap_refused.note(
                f"{identity.tenant_id} {reason}", reason=reason, tenant=identity.tenant_id, device=identity.device_id
            )
            return
        audit(
            "connect_refused",
            logging.WARNING,
            reason=reason,
            remote=f"{peer[0]}:{peer[1]}" if peer else None,
            tenant=identity.tenant_id if identity else None,
            device=identity.device_id if identity else None,
            detail=detail,
        )

    def connected(self, session: ClientSession) -> None:
        self._services.metrics.connects_accepted += 1
        identity = identity_of(session)
        audit(
            "connected",
            tenant=identity.tenant_id if identity else None,
            device=identity.device_id if identity else None,
            client_id=session.client_id,
            remote=session.peer,
            resumed=session.resumed,
        )

    async def disconnected(
        self, session: ClientSession, identity: DeviceIdentity, reason: str, detail: str | None, connected_at: int
    ) -> None:
        self._services.metrics.disconnects[reason] += 1
        audit(
            "disconnected",
            tenant=identity.tenant_id,
            device=identity.device_id,
            client_id=session.client_id,
            reason=reason,
            detail=detail,
        )
        if identity.is_service or self.shutting_down:
            return
        try:
            await self._services.registry.connections.record_disconnect(
                session_key=session.key, reason=reason, detail=detail, connected_at=connected_at
            )
        except Exception:
            log.exception("could not record the disconnect of %s", session.key)
