"""Username/password authentication: CONNECT username `<auth-id>@<tenant>`, password checked by argon2."""

from __future__ import annotations

from registry import Registry
from registry.identifiers import is_valid_auth_id, is_valid_id
from registry.models import CredentialKind

from ..identity import SERVICE, DeviceIdentity
from .hashing import PasswordHasher
from .outcome import AuthOutcome, Refusal, state_refusal


async def authenticate_password(
    registry: Registry, hasher: PasswordHasher, username: str, password: str | None
) -> AuthOutcome:
    auth_id, _, tenant_id = username.rpartition("@")
    if not (is_valid_auth_id(auth_id) and is_valid_id(tenant_id)):
        return AuthOutcome.refuse(Refusal.MALFORMED_USERNAME)
    record = await registry.credentials.find_password(tenant_id, auth_id)
    if record is None and (account := await registry.service_accounts.find(tenant_id, auth_id)) is not None:
        if not await hasher.verify(password or "", account.password_hash):
            return AuthOutcome(refusal=Refusal.BAD_PASSWORD, tenant_id=tenant_id)
        return AuthOutcome(
            identity=DeviceIdentity(
                tenant_id=tenant_id,
                device_id=auth_id,
                credential_id=0,
                credential_kind=CredentialKind.PASSWORD,
                auth_id=auth_id,
                tokens=frozenset(),
                role=SERVICE,
            )
        )
    # Always verify (against a decoy for unknown auth-ids): timing must not tell which check failed.
    if not await hasher.verify(password or "", record.secret if record else None) or record is None:
        return AuthOutcome.refuse(Refusal.UNKNOWN_CREDENTIAL if record is None else Refusal.BAD_PASSWORD, record)
    if (refusal := state_refusal(record)) is not None:
        return AuthOutcome.refuse(refusal, record)
    tokens = await registry.credentials.usable_tokens(record.tenant_id, record.device_id)
    return AuthOutcome(identity=DeviceIdentity.of(record, tokens))
