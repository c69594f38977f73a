"""Credentials' bodies: tokens, passwords, certificates (api/credentials.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import StringConstraints

from registry.models import Credential, CredentialState

from .base import Body, Token


class TokenIn(Body):
    token: Token | None = None


class StateIn(Body):
    state: CredentialState


class TokenOut(Body):
    token: str
    device: str
    state: CredentialState
    certificate_bound: bool
    """True for a token auto-provisioning (or an import) made: it names the device in topics but
    authenticates a CONNECT only together with the device's certificate."""
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, c: Credential) -> TokenOut:
        return cls(
            token=c.auth_id,
            device=c.device_id,
            state=c.state,
            certificate_bound=c.certificate_bound,
            created_at=c.created_at,
            updated_at=c.updated_at,
            last_used_at=c.last_used_at,
        )


class CertificateOut(Body):
    """An X.509 credential: the certificate's SHA-256 fingerprint, the CA it came through, its state."""

    fingerprint: str
    device: str
    ca_id: str | None
    auth_id: str | None
    state: CredentialState
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, c: Credential) -> CertificateOut:
        return cls(
            fingerprint=c.auth_id,
            device=c.device_id,
            ca_id=c.ca_id,
            auth_id=c.label,
            state=c.state,
            created_at=c.created_at,
            updated_at=c.updated_at,
            last_used_at=c.last_used_at,
        )


class PasswordIn(Body):
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class PasswordOut(Body):
    auth_id: str
    username: str
    state: CredentialState
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, c: Credential) -> PasswordOut:
        return cls(
            auth_id=c.auth_id,
            username=f"{c.auth_id}@{c.tenant_id}",
            state=c.state,
            created_at=c.created_at,
            updated_at=c.updated_at,
            last_used_at=c.last_used_at,
        )
