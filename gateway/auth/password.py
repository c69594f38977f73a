"""Username/password authentication: CONNECT username `<auth-id>@<tenant>`, password checked by argon2.

Devices and service accounts share one path, so the throttle around it (plugin.py) and the argon2
queue's deadline apply to both.
"""

from __future__ import annotations

from registry import Registry
from registry.identifiers import is_valid_auth_id, is_valid_id
from registry.models import CredentialKind

from .hashing import HasherBusy, PasswordHasher
from .identity import SERVICE, DeviceIdentity
from .outcome import AuthOutcome, Refusal, state_refusal


def parse_username(username: str) -> tuple[str, str] | None:
    """(auth-id, tenant) of a well-formed `<auth-id>@<tenant>`, else None."""
    auth_id, _, tenant_id = username.rpartition("@")
    return (auth_id, tenant_id) if is_valid_auth_id(auth_id) and is_valid_id(tenant_id) else None


async def authenticate_password(
    registry: Registry,
    hasher: PasswordHasher,
    username: str,
    password: str | None,
    *,
    queue_deadline: float | None = None,
    urgent: bool = False,
) -> AuthOutcome:
    """`queue_deadline`: seconds to wait for an argon2 worker before refusing (`auth_busy`) unhashed."""
    parsed = parse_username(username)
    if parsed is None:
        return AuthOutcome.refuse(Refusal.MALFORMED_USERNAME)
    auth_id, tenant_id = parsed
    try:
        with hasher.admission(queue_deadline, urgent=urgent):
            record = await registry.credentials.find_password(tenant_id, auth_id)
            account = await registry.service_accounts.find(tenant_id, auth_id) if record is None else None
            # Always verify (against a decoy for unknown auth-ids): timing must not tell which check failed.
            secret = record.secret if record else account.password_hash if account else None
            verified = await hasher.verify(password or "", secret, deadline=queue_deadline, urgent=urgent)
    except HasherBusy:
        return AuthOutcome.refuse(Refusal.AUTH_BUSY)
    if account is not None:
        if not verified:
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
    if not verified or record is None:
        return AuthOutcome.refuse(Refusal.UNKNOWN_CREDENTIAL if record is None else Refusal.BAD_PASSWORD, record)
    if (refusal := state_refusal(record)) is not None:
        return AuthOutcome.refuse(refusal, record)
    tokens = await registry.credentials.usable_tokens(record.tenant_id, record.device_id)
    return AuthOutcome(identity=DeviceIdentity.of(record, tokens))
