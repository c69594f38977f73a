"""What a CONNECT offers to prove who it is, read once from the session, and the verifiers that judge it.

A chain of one-method verifiers, as Hono's and EMQX's authenticators: each says allow (an identity),
deny (a refusal) or None (not mine: ask the next). Order matters: a client certificate decides who
the device is before any username is looked at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..node.context import GatewayServices
from .outcome import AuthOutcome, Refusal
from .password import authenticate_password
from .token import authenticate_token
from .x509 import authenticate_certificate


@dataclass(frozen=True, slots=True)
class ConnectCredentials:
    username: str | None
    password: str | None
    certificate: bytes | None
    """The DER of the TLS client certificate the handshake verified, if any."""
    address: str
    returning: bool = False
    """This username logged in from this address before: its password check goes first in the queue."""

    @classmethod
    def of(cls, session: Any) -> ConnectCredentials:
        """From our session or amqtt's (in a stock broker): both carry these fields."""
        tls = session.ssl_object
        return cls(
            username=session.username,
            password=session.password,
            certificate=tls.getpeercert(binary_form=True) if tls is not None else None,
            address=str(session.remote_address or ""),
        )


class Verifier(Protocol):
    async def verify(self, credentials: ConnectCredentials) -> AuthOutcome | None: ...


@dataclass(frozen=True, slots=True)
class CertificateVerifier:
    services: GatewayServices

    async def verify(self, credentials: ConnectCredentials) -> AuthOutcome | None:
        trust = self.services.trust
        if not credentials.certificate or trust is None:
            return None
        return await authenticate_certificate(
            self.services.registry, trust, credentials.certificate, credentials.username, self.services.settings.node_id
        )


@dataclass(frozen=True, slots=True)
class PasswordVerifier:
    """`<auth-id>@<tenant>` with a password: devices and service accounts, argon2id."""

    services: GatewayServices

    async def verify(self, credentials: ConnectCredentials) -> AuthOutcome | None:
        if not credentials.username or "@" not in credentials.username:
            return None
        return await authenticate_password(
            self.services.registry,
            self.services.hasher,
            credentials.username,
            credentials.password,
            queue_deadline=self.services.settings.password_queue_deadline,
            urgent=credentials.returning,
        )


@dataclass(frozen=True, slots=True)
class TokenVerifier:
    """Any other username is an endpoint token."""

    services: GatewayServices

    async def verify(self, credentials: ConnectCredentials) -> AuthOutcome | None:
        if not credentials.username:
            return None
        return await authenticate_token(self.services.registry, credentials.username, credentials.password)


def verifier_chain(services: GatewayServices) -> tuple[Verifier, ...]:
    return (CertificateVerifier(services), PasswordVerifier(services), TokenVerifier(services))


async def verify(chain: tuple[Verifier, ...], credentials: ConnectCredentials) -> AuthOutcome:
    for verifier in chain:
        outcome = await verifier.verify(credentials)
        if outcome is not None:
            return outcome
    return AuthOutcome.refuse(Refusal.NO_USERNAME)
