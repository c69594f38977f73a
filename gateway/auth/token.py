"""Endpoint-token authentication: CONNECT username = token, password empty."""

from __future__ import annotations

from registry import Registry
from registry.identifiers import is_valid_token

from .identity import DeviceIdentity
from .outcome import AuthOutcome, Refusal, state_refusal


async def authenticate_token(registry: Registry, token: str, password: str | None) -> AuthOutcome:
    if password:
        return AuthOutcome.refuse(Refusal.PASSWORD_WITH_TOKEN)
    if not is_valid_token(token):
        return AuthOutcome.refuse(Refusal.MALFORMED_USERNAME)
    record = await registry.credentials.find_token(token)
    if record is None:
        return AuthOutcome.refuse(Refusal.UNKNOWN_CREDENTIAL)
    if record.certificate_bound:  # it equals a certificate's CN: public, so it proves nothing alone
        return AuthOutcome.refuse(Refusal.CERTIFICATE_REQUIRED, record)
    if (refusal := state_refusal(record)) is not None:
        return AuthOutcome.refuse(refusal, record)
    return AuthOutcome(identity=DeviceIdentity.of(record, [token]))
