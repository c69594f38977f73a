"""The amqtt authentication plugin: the CONNECT's credentials (credentials.py) through the verifier chain.

Every attempt first reserves its tokens in the failure throttle (throttle.py): an empty bucket
refuses it (CONNACK 3) before any lookup or hashing. A wrong or unknown secret keeps the tokens;
anything else gives them back. A credential that succeeded from this address before (recent.py)
draws only on its own budget there, so strangers' guesses never lock it out, and a password login
of one goes first in the argon2 queue.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass

from ..mqtt.amqtt_api import Action, BaseAuthPlugin, Session
from ..node.context import GatewayServices, services_of
from ..ops.audit import audit, secret_hint
from .acl import decide
from .credentials import ConnectCredentials, Verifier, verifier_chain, verify
from .identity import IDENTITY_ATTR, RETRY_LATER_ATTR
from .outcome import AuthOutcome, Refusal
from .password import parse_username
from .throttle import address_key

log = logging.getLogger(__name__)

# Refusals of a secret that did not match, or of a certificate naming a device or token that is not
# its own: what guessing looks like. The rest (malformed input, a disabled device with the right
# secret, a busy hasher, a provisioning quota, ...) say nothing about the secret.
GUESSES = frozenset(
    {
        Refusal.UNKNOWN_CREDENTIAL,
        Refusal.BAD_PASSWORD,
        Refusal.CERTIFICATE_REQUIRED,
        Refusal.UNKNOWN_CERTIFICATE,
        Refusal.CREDENTIAL_MISMATCH,
        Refusal.DEVICE_ID_TAKEN,
        Refusal.DEVICE_ID_DELETED,
        Refusal.TOKEN_TAKEN,
        Refusal.PROVISIONING_CONFLICT,
    }
)


def credential_key(credentials: ConnectCredentials) -> str | None:
    """What names the credential a CONNECT offers, for "has this logged in from here before": the
    certificate (it decides before any username), else the username (an auth-id or a token)."""
    if credentials.certificate:
        return "cert:" + hashlib.sha256(credentials.certificate).hexdigest()
    return credentials.username or None


async def guarded_authenticate(
    services: GatewayServices, chain: tuple[Verifier, ...], credentials: ConnectCredentials
) -> AuthOutcome:
    """The verifier chain inside the failure throttle, with the returning-device lane for passwords."""
    address = credentials.address
    username = credentials.username if credentials.username and parse_username(credentials.username) else None
    key = credential_key(credentials)
    # By the address's throttle key (IPv6: its /64): the addresses of one /64 cannot crowd others out.
    at = address_key(address)
    known = key is not None and services.recent_logins.knows(key, at)
    if known and username is not None:
        credentials = dataclasses.replace(credentials, returning=True)
    attempt = services.throttle.reserve(address, username, known=known)
    if attempt.throttled_by is not None:
        services.metrics.limits_hit[attempt.throttled_by] += 1
        return AuthOutcome.refuse(Refusal.THROTTLED)
    try:
        outcome = await verify(chain, credentials)
    except Exception:  # the registry failing must refuse, never crash the listener
        log.exception("authentication failed on a registry error")
        outcome = AuthOutcome.refuse(Refusal.REGISTRY_UNAVAILABLE)
    except BaseException:
        attempt.release()
        raise
    if outcome.refusal == Refusal.AUTH_BUSY:
        services.metrics.limits_hit["password_queue_deadline"] += 1
    guessed = outcome.refusal in GUESSES
    if guessed:
        attempt.failed()
    else:
        attempt.release()
    if key is not None and outcome.identity is not None:
        services.recent_logins.succeeded(key, at)
    elif key is not None and guessed:
        services.recent_logins.failed(key, at)
    return outcome


# Refusals that say nothing about the credential (it was not checked) but that the gateway is busy,
# its registry failed, or this address has guessed too often: the client is told to come back
# (CONNACK 3) rather than that it is not authorized (CONNACK 5), which many clients take as final.
RETRY_LATER = frozenset({Refusal.AUTH_BUSY, Refusal.REGISTRY_UNAVAILABLE, Refusal.THROTTLED})


class DeviceAuthPlugin(BaseAuthPlugin):
    """Inside `mqtt-gateway serve` the services come on the context; in a stock amqtt broker from
    `registry` in the plugin's config (gateway/node/stock.py)."""

    @dataclass
    class Config:
        registry: str | None = None
        """Path of the gateway's registry file; only for a stock amqtt broker."""

    async def _services(self) -> GatewayServices:
        services = services_of(self.context)
        if services is not None:
            return services
        registry = getattr(self.context.config, "registry", None)
        if not registry:
            raise RuntimeError("DeviceAuthPlugin in a stock amqtt broker needs `registry: <path>` in its config")
        from ..node.stock import stock_services  # only a stock broker needs it

        return await stock_services(registry)

    async def close(self) -> None:
        if services_of(self.context) is None:
            from ..node.stock import close_stock_services

            await close_stock_services()

    async def authenticate(self, *, session: Session) -> bool:
        try:
            services = await self._services()
        except Exception:  # a stock broker pointed at no registry: refuse, and say why
            log.exception("DeviceAuthPlugin cannot open the gateway registry")
            return False
        outcome = await guarded_authenticate(services, verifier_chain(services), ConnectCredentials.of(session))
        identity = outcome.identity
        if identity is not None and session.will_flag:
            # A will is a publish made later on the device's behalf: the ACL applies now.
            session.attributes[IDENTITY_ATTR] = identity
            stock = services_of(self.context) is None  # a stock amqtt broker: one topic space for every tenant
            if not decide(session, session.will_topic, Action.PUBLISH, shared_topic_space=stock):
                outcome = AuthOutcome(
                    refusal=Refusal.WILL_TOPIC_DENIED, tenant_id=identity.tenant_id, device_id=identity.device_id
                )
                identity = None
        if identity is None:
            session.attributes.pop(IDENTITY_ATTR, None)
            reason = outcome.refusal or Refusal.UNKNOWN_CREDENTIAL
            if reason in RETRY_LATER:  # the gateway's state, not the credential's: CONNACK 3, not 5
                session.attributes[RETRY_LATER_ATTR] = True
            services.metrics.connect_refused(reason.value, outcome.tenant_id)
            fields = {
                "reason": reason.value,
                "remote": f"{session.remote_address}:{session.remote_port}",
                "client_id": session.client_id,
                "username_sha256": secret_hint(session.username),
                "tenant": outcome.tenant_id,
                "device": outcome.device_id,
            }
            if reason == Refusal.THROTTLED:  # the cheap flood: a line and a count per address, not a line each
                services.throttled_log.note(address_key(str(session.remote_address or "")), **fields)
            else:
                audit("connect_refused", logging.WARNING, **fields)
            return False
        session.attributes[IDENTITY_ATTR] = identity
        if outcome.provisioned:
            services.metrics.auto_provisioned += 1
            services.provisioned_log.note(
                identity.tenant_id, tenant=identity.tenant_id, device=identity.device_id, remote=session.remote_address
            )
        return True
