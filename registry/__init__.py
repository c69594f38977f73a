"""The SQLite registry: the only code that talks SQL. Typed async stores, pydantic models out."""

from __future__ import annotations

from pathlib import Path

from .audit import AuditStore
from .commands import CommandStore
from .connections import ConnectionStore
from .credentials import CredentialStore
from .database import Database
from .devices import DeviceStore
from .endpoint_filters import EndpointFilterStore
from .errors import Conflict, Invalid, LimitReached, NotFound, RegistryError
from .groups import GroupStore
from .imports import ImportStore
from .metadata import MetadataStore
from .outbox import OutboxStore
from .provisioning import ProvisioningStore
from .recent import auto_provisioned_since
from .service_accounts import ServiceAccountStore
from .tenants import TenantStore
from .trusted_cas import TrustedCaStore

__all__ = ["Conflict", "Invalid", "LimitReached", "NotFound", "Registry", "RegistryError"]


class Registry:
    """One registry file and its stores."""

    def __init__(
        self,
        path: Path,
        *,
        connection_log_limit: int = 100,
        max_event_bytes: int | None = None,
        event_backlog_max_bytes: int | None = None,
    ) -> None:
        self.db = Database(path)
        self.tenants = TenantStore(self.db)
        self.devices = DeviceStore(self.db)
        self.credentials = CredentialStore(self.db)
        self.connections = ConnectionStore(self.db, log_limit=connection_log_limit)
        self.trusted_cas = TrustedCaStore(self.db)
        self.provisioning = ProvisioningStore(self.db)
        self.metadata = MetadataStore(self.db)
        self.service_accounts = ServiceAccountStore(self.db)
        self.outbox = OutboxStore(self.db, max_event_bytes=max_event_bytes, backlog_max_bytes=event_backlog_max_bytes)
        self.commands = CommandStore(self.db)
        self.groups = GroupStore(self.db)
        self.imports = ImportStore(self.db)
        self.endpoint_filters = EndpointFilterStore(self.db)
        self.audit = AuditStore(self.db)

    async def open(self) -> Registry:
        await self.db.open()
        await self.connections.configure()
        await self.outbox.configure()
        await self.audit.open()
        return self

    async def recently_auto_provisioned(
        self, tenant_id: str, since_ms: int, *, limit: int = 20
    ) -> tuple[list[tuple[int, str]], int]:
        """(created at ms, device id) of the newest, and how many since `since_ms` (the dashboard)."""
        return await auto_provisioned_since(self.db, tenant_id, since_ms, limit=limit)

    async def close(self) -> None:
        await self.db.close()
