"""How the services reach devices and applications: the one interface between them and the broker.

Commands, policies, data and events never see the broker class, its session table or its router:
they ask for a device's live sessions, hand a message to one session, publish to whoever subscribed
(a tenant's applications), deliver an event to the tenant's service accounts and wait for their
acknowledgement, and close sessions. One node's broker answers these (gateway/mqtt/local_reach.py);
a cluster puts an implementation that also crosses nodes behind the same names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..auth.identity import DeviceIdentity
    from ..mqtt.session import ClientSession


class Reach(Protocol):
    def sessions_of(self, tenant_id: str, device_id: str) -> list[ClientSession]:
        """The device's sessions connected now (CONNACK sent)."""
        ...

    def subscriptions_of(self, session: ClientSession) -> Iterable[str]:
        """The topic filters the session holds."""
        ...

    def deliver(self, session: ClientSession, topic: str, payload: bytes, qos: int) -> bool:
        """Queues a message for one session, if it subscribed to `topic` and may receive it."""
        ...

    def publish(self, topic: str, payload: bytes, qos: int, *, droppable: bool = False) -> int:
        """Queues a message for every session subscribed to `topic` and allowed to receive it
        (`droppable`: the first to go when a queue is full). Returns how many got it."""
        ...

    def tenants_with_applications(self) -> set[str]:
        """Tenants with a service account connected now."""
        ...

    async def deliver_event(self, tenant_id: str, topic: str, payload: bytes, ack_within: float) -> bool:
        """QoS 1 to the tenant's service accounts subscribed to `topic`: True when one acknowledged it
        within `ack_within` seconds."""
        ...

    async def kick(self, match: Callable[[DeviceIdentity], bool], detail: str) -> int:
        """Closes the matching live sessions now (revocation, disable, delete); how many."""
        ...
