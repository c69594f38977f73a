"""/v1/tenants/{tenant}/devices/{device}/tokens, /passwords and /certificates.

Every change that can invalidate a credential (a state other than active/inactive, a deletion, a new
password) closes the sessions it opened, in one place: `_close_sessions_of`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Body, Response

from registry.errors import NotFound
from registry.models import Credential, CredentialKind

from ..identity import DeviceIdentity
from .deps import GatewayDep
from .schemas import CertificateOut, PasswordIn, PasswordOut, StateIn, TokenIn, TokenOut

router = APIRouter(prefix="/v1/tenants/{tenant}/devices/{device}", tags=["credentials"])
# Tokens are unique, so a token alone names its device: lets a script act on a token it holds.
tenant_tokens = APIRouter(prefix="/v1/tenants/{tenant}/tokens", tags=["credentials"])


async def _device_of_token(gw: GatewayDep, tenant: str, token: str) -> str:
    record = await gw.registry.credentials.find_token(token)
    if record is None or record.tenant_id != tenant:
        raise NotFound("token credential not found", field="token")
    return record.device_id


def _opened_by(tenant: str, kind: CredentialKind, auth_id: str) -> Callable[[DeviceIdentity], bool]:
    """Sessions that depend on the credential: for a token, every session that may use it in topics
    (a password session of the same device too); otherwise the sessions it authenticated."""
    if kind == CredentialKind.TOKEN:
        return lambda i: i.tenant_id == tenant and auth_id in i.tokens
    return lambda i: i.tenant_id == tenant and i.credential_kind == kind and i.auth_id == auth_id


async def _close_sessions_of(gw: GatewayDep, tenant: str, kind: CredentialKind, auth_id: str, detail: str) -> None:
    await gw.kick(_opened_by(tenant, kind, auth_id), detail)


async def _set_state(
    gw: GatewayDep, tenant: str, device: str, kind: CredentialKind, auth_id: str, body: StateIn
) -> Credential:
    credential = await gw.registry.credentials.set_state(tenant, device, kind, auth_id, body.state)
    if not credential.state.usable:
        await _close_sessions_of(gw, tenant, kind, auth_id, f"{_NAMES[kind]} {credential.state.value}")
    return credential


async def _delete(gw: GatewayDep, tenant: str, device: str, kind: CredentialKind, auth_id: str) -> Response:
    await gw.registry.credentials.delete(tenant, device, kind, auth_id)
    await _close_sessions_of(gw, tenant, kind, auth_id, f"{_NAMES[kind]} deleted")
    return Response(status_code=204)


_NAMES = {CredentialKind.TOKEN: "token", CredentialKind.PASSWORD: "password", CredentialKind.X509: "certificate"}


# -- tokens ---------------------------------------------------------------------------------------------


@router.post("/tokens", status_code=201)
async def issue_token(
    tenant: str, device: str, gw: GatewayDep, body: Annotated[TokenIn | None, Body()] = None
) -> TokenOut:
    credential = await gw.registry.credentials.issue_token(tenant, device, body.token if body else None)
    return TokenOut.of(credential)


@router.get("/tokens")
async def list_tokens(tenant: str, device: str, gw: GatewayDep) -> list[TokenOut]:
    return [TokenOut.of(c) for c in await gw.registry.credentials.list(tenant, device, CredentialKind.TOKEN)]


@router.get("/tokens/{token}")
async def get_token(tenant: str, device: str, token: str, gw: GatewayDep) -> TokenOut:
    return TokenOut.of(await gw.registry.credentials.get(tenant, device, CredentialKind.TOKEN, token))


@router.patch("/tokens/{token}")
async def set_token_state(tenant: str, device: str, token: str, body: StateIn, gw: GatewayDep) -> TokenOut:
    return TokenOut.of(await _set_state(gw, tenant, device, CredentialKind.TOKEN, token, body))


@router.delete("/tokens/{token}", status_code=204)
async def delete_token(tenant: str, device: str, token: str, gw: GatewayDep) -> Response:
    return await _delete(gw, tenant, device, CredentialKind.TOKEN, token)


@tenant_tokens.get("/{token}")
async def get_tenant_token(tenant: str, token: str, gw: GatewayDep) -> TokenOut:
    device = await _device_of_token(gw, tenant, token)
    return TokenOut.of(await gw.registry.credentials.get(tenant, device, CredentialKind.TOKEN, token))


@tenant_tokens.patch("/{token}")
async def set_tenant_token_state(tenant: str, token: str, body: StateIn, gw: GatewayDep) -> TokenOut:
    return await set_token_state(tenant, await _device_of_token(gw, tenant, token), token, body, gw)


# -- passwords ------------------------------------------------------------------------------------------


@router.put("/passwords/{auth_id}")
async def set_password(tenant: str, device: str, auth_id: str, body: PasswordIn, gw: GatewayDep) -> PasswordOut:
    """Creates the password, or rotates it: sessions opened with the old one are closed."""
    password_hash = await gw.services.hasher.hash(body.password)
    credential = await gw.registry.credentials.set_password(tenant, device, auth_id, password_hash)
    await _close_sessions_of(gw, tenant, CredentialKind.PASSWORD, auth_id, "password changed")
    return PasswordOut.of(credential)


@router.get("/passwords")
async def list_passwords(tenant: str, device: str, gw: GatewayDep) -> list[PasswordOut]:
    return [PasswordOut.of(c) for c in await gw.registry.credentials.list(tenant, device, CredentialKind.PASSWORD)]


@router.patch("/passwords/{auth_id}")
async def set_password_state(tenant: str, device: str, auth_id: str, body: StateIn, gw: GatewayDep) -> PasswordOut:
    return PasswordOut.of(await _set_state(gw, tenant, device, CredentialKind.PASSWORD, auth_id, body))


@router.delete("/passwords/{auth_id}", status_code=204)
async def delete_password(tenant: str, device: str, auth_id: str, gw: GatewayDep) -> Response:
    return await _delete(gw, tenant, device, CredentialKind.PASSWORD, auth_id)


# -- certificates (X.509 credentials, made by auto-provisioning) ----------------------------------------


@router.get("/certificates")
async def list_certificates(tenant: str, device: str, gw: GatewayDep) -> list[CertificateOut]:
    return [CertificateOut.of(c) for c in await gw.registry.credentials.list(tenant, device, CredentialKind.X509)]


@router.get("/certificates/{fingerprint}")
async def get_certificate(tenant: str, device: str, fingerprint: str, gw: GatewayDep) -> CertificateOut:
    return CertificateOut.of(await gw.registry.credentials.get(tenant, device, CredentialKind.X509, fingerprint))


@router.patch("/certificates/{fingerprint}")
async def set_certificate_state(
    tenant: str, device: str, fingerprint: str, body: StateIn, gw: GatewayDep
) -> CertificateOut:
    """Suspend, re-activate or revoke one certificate; suspending or revoking closes its sessions."""
    return CertificateOut.of(await _set_state(gw, tenant, device, CredentialKind.X509, fingerprint, body))
