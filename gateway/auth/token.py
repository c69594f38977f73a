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
    record = await registry.credentials.find_token(token)  # bearer tokens only
    if record is None:
        # A bound token (a device id, as a certificate's CN: public) proves nothing alone. It may name
        # devices in several tenants, so the refusal names none of them.
        bound = await registry.credentials.is_bound_token(token)
        return AuthOutcome.refuse(Refusal.CERTIFICATE_REQUIRED if bound else Refusal.UNKNOWN_CREDENTIAL)
    if (refusal := state_refusal(record)) is not None:
        return AuthOutcome.refuse(refusal, record)
    return AuthOutcome(identity=DeviceIdentity.of(record, [(token, False)]))
