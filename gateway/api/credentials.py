"""/v1/tenants/{tenant}/devices/{device}/tokens and /passwords"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response

from registry.errors import NotFound
from registry.models import CredentialKind, CredentialState

from ..identity import DeviceIdentity
from .deps import GatewayDep
from .schemas import PasswordIn, PasswordOut, StateIn, TokenIn, TokenOut

router = APIRouter(prefix="/v1/tenants/{tenant}/devices/{device}", tags=["credentials"])
# Tokens are unique, so a token alone names its device: lets a script act on a token it holds.
tenant_tokens = APIRouter(prefix="/v1/tenants/{tenant}/tokens", tags=["credentials"])


async def _device_of_token(gw: GatewayDep, tenant: str, token: str) -> str:
    record = await gw.registry.credentials.find_token(token)
    if record is None or record.tenant_id != tenant:
        raise NotFound("token credential not found", field="token")
    return record.device_id


def _uses_token(tenant: str, token: str) -> object:
    def match(i: DeviceIdentity) -> bool:
        return i.tenant_id == tenant and token in i.tokens

    return match


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
    credential = await gw.registry.credentials.set_state(tenant, device, CredentialKind.TOKEN, token, body.state)
    if not credential.state.usable:
        await gw.kick(_uses_token(tenant, token), f"token {credential.state.value}")  # type: ignore[arg-type]
    return TokenOut.of(credential)


@router.delete("/tokens/{token}", status_code=204)
async def delete_token(tenant: str, device: str, token: str, gw: GatewayDep) -> Response:
    await gw.registry.credentials.delete(tenant, device, CredentialKind.TOKEN, token)
    await gw.kick(_uses_token(tenant, token), "token deleted")  # type: ignore[arg-type]
    return Response(status_code=204)


@router.put("/passwords/{auth_id}")
async def set_password(tenant: str, device: str, auth_id: str, body: PasswordIn, gw: GatewayDep) -> PasswordOut:
    password_hash = await gw.services.hasher.hash(body.password)
    return PasswordOut.of(await gw.registry.credentials.set_password(tenant, device, auth_id, password_hash))


@router.get("/passwords")
async def list_passwords(tenant: str, device: str, gw: GatewayDep) -> list[PasswordOut]:
    return [PasswordOut.of(c) for c in await gw.registry.credentials.list(tenant, device, CredentialKind.PASSWORD)]


@router.patch("/passwords/{auth_id}")
async def set_password_state(tenant: str, device: str, auth_id: str, body: StateIn, gw: GatewayDep) -> PasswordOut:
    credential = await gw.registry.credentials.set_state(tenant, device, CredentialKind.PASSWORD, auth_id, body.state)
    if body.state in (CredentialState.SUSPENDED, CredentialState.REVOKED):
        await gw.kick(
            lambda i: i.tenant_id == tenant and i.credential_kind == CredentialKind.PASSWORD and i.auth_id == auth_id,
            f"password {credential.state.value}",
        )
    return PasswordOut.of(credential)


@router.delete("/passwords/{auth_id}", status_code=204)
async def delete_password(tenant: str, device: str, auth_id: str, gw: GatewayDep) -> Response:
    await gw.registry.credentials.delete(tenant, device, CredentialKind.PASSWORD, auth_id)
    await gw.kick(
        lambda i: i.tenant_id == tenant and i.credential_kind == CredentialKind.PASSWORD and i.auth_id == auth_id,
        "password deleted",
    )
    return Response(status_code=204)


@tenant_tokens.get("/{token}")
async def get_tenant_token(tenant: str, token: str, gw: GatewayDep) -> TokenOut:
    device = await _device_of_token(gw, tenant, token)
    return TokenOut.of(await gw.registry.credentials.get(tenant, device, CredentialKind.TOKEN, token))


@tenant_tokens.patch("/{token}")
async def set_tenant_token_state(tenant: str, token: str, body: StateIn, gw: GatewayDep) -> TokenOut:
    return await set_token_state(tenant, await _device_of_token(gw, tenant, token), token, body, gw)
