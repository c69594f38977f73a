"""What a management write does besides its registry write, one class per entity: the sessions it
closes and the trust it reloads. The HTTP API calls these (and so will the CLI's batch jobs), so
"a state change closes sessions" is written once per entity, not in each handler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from registry import Registry
from registry.models import Credential, CredentialKind, CredentialState, Device, Group, Tenant, TrustedCa

from ..auth.identity import DeviceIdentity
from ..node.context import GatewayServices

Match = Callable[[DeviceIdentity], bool]


class Node(Protocol):
    """The running gateway, as seen from here (gateway/node/runtime.py)."""

    registry: Registry
    services: GatewayServices

    async def kick(self, match: Match, detail: str) -> int: ...

    async def reload_trust(self) -> None: ...


class Tenants:
    def __init__(self, node: Node) -> None:
        self._node = node

    async def create(self, tenant_id: str, **fields: Any) -> Tenant:
        created = await self._node.registry.tenants.create(tenant_id, **fields)
        self._forwarding(created)
        return created

    async def update(self, tenant_id: str, **changes: Any) -> Tenant:
        updated = await self._node.registry.tenants.update(tenant_id, **changes)
        self._forwarding(updated)
        if changes.get("enabled") is not None:
            await self._node.reload_trust()  # a disabled tenant's CAs are trusted no more
        if changes.get("enabled") is False:
            await self._node.kick(lambda i: i.tenant_id == tenant_id, "tenant disabled")
        return updated

    async def delete(self, tenant_id: str) -> None:
        await self._node.registry.tenants.delete(tenant_id)
        self._forget(tenant_id)
        await self._node.reload_trust()
        await self._node.kick(lambda i: i.tenant_id == tenant_id, "tenant deleted")

    def _forget(self, tenant_id: str) -> None:
        _forget_in_memory(self._node, tenant_id, None)

    def _forwarding(self, tenant: Tenant) -> None:
        """`forwardExtensions` applies at once to the tenant's sessions on this node (read from memory)."""
        if self._node.services.data is not None:
            self._node.services.data.set_forwarded(tenant.id, tenant.forward_extensions)


class Devices:
    def __init__(self, node: Node) -> None:
        self._node = node

    async def update(self, tenant_id: str, device_id: str, **changes: Any) -> Device:
        before = await self._node.registry.devices.get(tenant_id, device_id)
        updated = await self._node.registry.devices.update(tenant_id, device_id, **changes)
        if changes.get("enabled") is False:
            await self._node.kick(_device(tenant_id, device_id), "device disabled")
        if updated.group != before.group:
            await _policy_changed(self._node, tenant_id, [device_id])
        return updated

    async def delete(self, tenant_id: str, device_id: str) -> None:
        await self._node.registry.devices.delete(tenant_id, device_id, node=self._node.services.settings.node_id)
        await self._node.kick(_device(tenant_id, device_id), "device deleted")
        _forget_in_memory(self._node, tenant_id, device_id)


_NAMES = {CredentialKind.TOKEN: "token", CredentialKind.PASSWORD: "password", CredentialKind.X509: "certificate"}


class Groups:
    """Group changes that change what a device should apply push its new policy (7/CMP observe)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    async def delete(self, tenant_id: str, group_id: str, *, move_to: str | None = None) -> list[str]:
        moved = await self._node.registry.groups.delete(tenant_id, group_id, move_to=move_to)
        await _policy_changed(self._node, tenant_id, moved)
        return moved

    async def move(self, tenant_id: str, group_id: str, device_ids: list[str]) -> list[str]:
        moved = await self._node.registry.groups.move_devices(tenant_id, group_id, device_ids)
        await _policy_changed(self._node, tenant_id, moved)
        return moved

    async def set_policy(self, tenant_id: str, group_id: str, config: dict[str, Any]) -> Group:
        before = await self._node.registry.groups.get(tenant_id, group_id)
        group = await self._node.registry.groups.set_policy(
            tenant_id, group_id, config, node=self._node.services.settings.node_id
        )
        if group.config_id != before.config_id:
            await _policy_changed(self._node, tenant_id, await self._node.registry.groups.members(tenant_id, group_id))
        return group


async def _policy_changed(node: Node, tenant_id: str, device_ids: list[str]) -> None:
    if node.services.policies is not None and device_ids:
        await node.services.policies.policy_changed(tenant_id, device_ids)


class Credentials:
    """Every change that can invalidate a credential (a state other than active/inactive, a deletion,
    a new password) closes the sessions it opened."""

    def __init__(self, node: Node) -> None:
        self._node = node

    async def set_state(
        self, tenant_id: str, device_id: str, kind: CredentialKind, auth_id: str, state: CredentialState
    ) -> Credential:
        credential = await self._node.registry.credentials.set_state(tenant_id, device_id, kind, auth_id, state)
        if not credential.state.usable:
            await self._close(tenant_id, kind, auth_id, f"{_NAMES[kind]} {credential.state.value}")
        return credential

    async def delete(self, tenant_id: str, device_id: str, kind: CredentialKind, auth_id: str) -> None:
        await self._node.registry.credentials.delete(
            tenant_id, device_id, kind, auth_id, node=self._node.services.settings.node_id
        )
        await self._close(tenant_id, kind, auth_id, f"{_NAMES[kind]} deleted")

    async def set_password(self, tenant_id: str, device_id: str, auth_id: str, password: str) -> Credential:
        """Creates the password, or rotates it: sessions opened with the old one are closed."""
        password_hash = await self._node.services.hasher.hash(password)
        credential = await self._node.registry.credentials.set_password(
            tenant_id, device_id, auth_id, password_hash, node=self._node.services.settings.node_id
        )
        await self._close(tenant_id, CredentialKind.PASSWORD, auth_id, "password changed")
        return credential

    async def _close(self, tenant_id: str, kind: CredentialKind, auth_id: str, detail: str) -> None:
        await self._node.kick(_opened_by(tenant_id, kind, auth_id), detail)


class TrustedCas:
    def __init__(self, node: Node) -> None:
        self._node = node

    async def create(self, ca: TrustedCa, *, proven_code: str | None) -> TrustedCa:
        created = await self._node.registry.trusted_cas.create(ca, proven_code=proven_code)
        await self._node.reload_trust()
        return created

    async def update(self, tenant_id: str, ca_id: str, **changes: Any) -> TrustedCa:
        ca = await self._node.registry.trusted_cas.update(tenant_id, ca_id, **changes)
        await self._node.reload_trust()
        if not ca.enabled:
            await self._node.kick(lambda i: i.ca_id == ca_id, "trusted CA disabled")
        return ca

    async def delete(self, tenant_id: str, ca_id: str) -> None:
        await self._node.registry.trusted_cas.delete(tenant_id, ca_id)
        await self._node.reload_trust()
        await self._node.kick(lambda i: i.ca_id == ca_id, "trusted CA removed")


class ServiceAccounts:
    def __init__(self, node: Node) -> None:
        self._node = node

    async def delete(self, tenant_id: str, account_id: str) -> None:
        await self._node.registry.service_accounts.delete(tenant_id, account_id)
        await self._node.kick(
            lambda i: i.is_service and i.tenant_id == tenant_id and i.device_id == account_id,
            "service account deleted",
        )


class Management:
    def __init__(self, node: Node) -> None:
        self.tenants = Tenants(node)
        self.devices = Devices(node)
        self.groups = Groups(node)
        self.credentials = Credentials(node)
        self.trusted_cas = TrustedCas(node)
        self.service_accounts = ServiceAccounts(node)


def _forget_in_memory(node: Node, tenant_id: str, device_id: str | None) -> None:
    """What this node holds of a deleted device (or tenant) besides its sessions: its last data
    sample, and REST calls waiting for its commands' results (answered 404 at once)."""
    if node.services.data is not None:
        node.services.data.forget(tenant_id, device_id)
    if node.services.commands is not None:
        node.services.commands.forget(tenant_id, device_id)


def _device(tenant_id: str, device_id: str) -> Match:
    return lambda i: i.tenant_id == tenant_id and i.device_id == device_id


def _opened_by(tenant_id: str, kind: CredentialKind, auth_id: str) -> Match:
    """Sessions that depend on the credential: for a token, every session that may use it in topics
    (a password session of the same device too); otherwise the sessions it authenticated."""
    if kind == CredentialKind.TOKEN:
        return lambda i: i.tenant_id == tenant_id and auth_id in i.tokens
    return lambda i: i.tenant_id == tenant_id and i.credential_kind == kind and i.auth_id == auth_id
