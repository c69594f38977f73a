"""/v1/tenants/{tenant}/devices/{device}/tokens, /passwords and /certificates.

What a change does to live sessions is gateway/services/management.py's (`Credentials`), not the handlers'.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response

from registry.errors import NotFound
from registry.models import Credential, CredentialKind

from .deps import GatewayDep
from .schemas.credentials import CertificateOut, PasswordIn, PasswordOut, StateIn, TokenIn, TokenOut

router = APIRouter(prefix="/v1/tenants/{tenant}/devices/{device}", tags=["credentials"])
# Within a tenant a token names one device, so a token alone names its device: lets a script act on a
# token it holds.
tenant_tokens = APIRouter(prefix="/v1/tenants/{tenant}/tokens", tags=["credentials"])


async def _device_of_token(gw: GatewayDep, tenant: str, token: str) -> str:
    record = await gw.registry.credentials.find_tenant_token(tenant, token)
    if record is None:
        raise NotFound("token credential not found", field="token")
    return record.device_id


async def _set_state(
    gw: GatewayDep, tenant: str, device: str, kind: CredentialKind, auth_id: str, body: StateIn
) -> Credential:
    return await gw.manage.credentials.set_state(tenant, device, kind, auth_id, body.state)


async def _delete(gw: GatewayDep, tenant: str, device: str, kind: CredentialKind, auth_id: str) -> Response:
    await gw.manage.credentials.delete(tenant, device, kind, auth_id)
    return Response(status_code=204)


# -- tokens ---------------------------------------------------------------------------------------------


@router.post("/tokens", summary="Issue an endpoint token", status_code=201)
async def issue_token(
    tenant: str, device: str, gw: GatewayDep, body: Annotated[TokenIn | None, Body()] = None
) -> TokenOut:
    """A new token for the device, `inactive` until its first CONNECT; the body may name the token,
    otherwise one with 192 random bits is generated. A device's first credential makes it `registered`."""
    credential = await gw.registry.credentials.issue_token(
        tenant, device, body.token if body else None, node=gw.settings.node_id
    )
    return TokenOut.of(credential)


@router.get("/tokens", summary="List a device's tokens")
async def list_tokens(tenant: str, device: str, gw: GatewayDep) -> list[TokenOut]:
    """The device's endpoint tokens with their states."""
    return [TokenOut.of(c) for c in await gw.registry.credentials.list(tenant, device, CredentialKind.TOKEN)]


@router.get("/tokens/{token}", summary="Get a device's token")
async def get_token(tenant: str, device: str, token: str, gw: GatewayDep) -> TokenOut:
    """One token of the device, with its state."""
    return TokenOut.of(await gw.registry.credentials.get(tenant, device, CredentialKind.TOKEN, token))


@router.patch("/tokens/{token}", summary="Change a token's state")
async def set_token_state(tenant: str, device: str, token: str, body: StateIn, gw: GatewayDep) -> TokenOut:
    """`active`, `suspended` or `revoked` (final), as Kaa's credential states allow; suspending or revoking
    closes the sessions the token opened. A transition not allowed is a 409."""
    return TokenOut.of(await _set_state(gw, tenant, device, CredentialKind.TOKEN, token, body))


@router.delete("/tokens/{token}", summary="Delete a token", status_code=204)
async def delete_token(tenant: str, device: str, token: str, gw: GatewayDep) -> Response:
    """Deletes the token and closes the sessions it opened."""
    return await _delete(gw, tenant, device, CredentialKind.TOKEN, token)


@tenant_tokens.get("/{token}", summary="Get a token by value")
async def get_tenant_token(tenant: str, token: str, gw: GatewayDep) -> TokenOut:
    """The token and its device, for a client that holds a token but not its device id."""
    device = await _device_of_token(gw, tenant, token)
    return TokenOut.of(await gw.registry.credentials.get(tenant, device, CredentialKind.TOKEN, token))


@tenant_tokens.patch("/{token}", summary="Change a token's state by value")
async def set_tenant_token_state(tenant: str, token: str, body: StateIn, gw: GatewayDep) -> TokenOut:
    """As PATCH .../devices/{device}/tokens/{token}, without the device id."""
    return await set_token_state(tenant, await _device_of_token(gw, tenant, token), token, body, gw)


# -- passwords ------------------------------------------------------------------------------------------


@router.put("/passwords/{auth_id}", summary="Set a device password")
async def set_password(tenant: str, device: str, auth_id: str, body: PasswordIn, gw: GatewayDep) -> PasswordOut:
    """Creates the password, or rotates it: sessions opened with the old one are closed."""
    return PasswordOut.of(await gw.manage.credentials.set_password(tenant, device, auth_id, body.password))


@router.get("/passwords", summary="List a device's passwords")
async def list_passwords(tenant: str, device: str, gw: GatewayDep) -> list[PasswordOut]:
    """The device's password credentials (auth-id, username, state); never a hash."""
    return [PasswordOut.of(c) for c in await gw.registry.credentials.list(tenant, device, CredentialKind.PASSWORD)]


@router.patch("/passwords/{auth_id}", summary="Change a password's state")
async def set_password_state(tenant: str, device: str, auth_id: str, body: StateIn, gw: GatewayDep) -> PasswordOut:
    """`active`, `suspended` or `revoked` (final); suspending or revoking closes the sessions it opened."""
    return PasswordOut.of(await _set_state(gw, tenant, device, CredentialKind.PASSWORD, auth_id, body))


@router.delete("/passwords/{auth_id}", summary="Delete a password", status_code=204)
async def delete_password(tenant: str, device: str, auth_id: str, gw: GatewayDep) -> Response:
    """Deletes the password credential and closes the sessions it opened."""
    return await _delete(gw, tenant, device, CredentialKind.PASSWORD, auth_id)


# -- certificates (X.509 credentials, made by auto-provisioning) ----------------------------------------


@router.get("/certificates", summary="List a device's certificates")
async def list_certificates(tenant: str, device: str, gw: GatewayDep) -> list[CertificateOut]:
    """The device's X.509 credentials: fingerprint, CA, auth-id and state."""
    return [CertificateOut.of(c) for c in await gw.registry.credentials.list(tenant, device, CredentialKind.X509)]


@router.get("/certificates/{fingerprint}", summary="Get a device's certificate")
async def get_certificate(tenant: str, device: str, fingerprint: str, gw: GatewayDep) -> CertificateOut:
    """One X.509 credential of the device, by the certificate's SHA-256 fingerprint."""
    return CertificateOut.of(await gw.registry.credentials.get(tenant, device, CredentialKind.X509, fingerprint))


@router.patch("/certificates/{fingerprint}", summary="Change a certificate's state")
async def set_certificate_state(
    tenant: str, device: str, fingerprint: str, body: StateIn, gw: GatewayDep
) -> CertificateOut:
    """Suspend, re-activate or revoke one certificate; suspending or revoking closes its sessions."""
    return CertificateOut.of(await _set_state(gw, tenant, device, CredentialKind.X509, fingerprint, body))
