"""The services' Reach (gateway/services/reach.py) on one node: its broker's sessions and router."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from ..auth.identity import DeviceIdentity, identity_of
from .amqtt_api import Action
from .broker import GatewayBroker
from .connection import CloseReason, Connection
from .qos import Outgoing
from .session import ClientSession


class LocalReach:
    def __init__(self, broker: GatewayBroker) -> None:
        self._broker = broker

    def sessions_of(self, tenant_id: str, device_id: str) -> list[ClientSession]:
        table = self._broker.table
        found = []
        for key in table.keys_of(f"{tenant_id}/{device_id}"):
            live = table.live.get(key)
            if live is not None and live.connection.connack_sent:
                found.append(live.connection.session)
        return found

    def subscriptions_of(self, session: ClientSession) -> Iterable[str]:
        return self._broker.router.index.filters_of(session.key)

    def deliver(self, session: ClientSession, topic: str, payload: bytes, qos: int) -> bool:
        return self._broker.router.deliver(session.key, topic, payload, qos)

    def publish(self, topic: str, payload: bytes, qos: int, *, droppable: bool = False) -> int:
        return self._broker.router.route(topic, payload, qos, droppable=droppable)

    def tenants_with_applications(self) -> set[str]:
        """One pass over the sessions, so tenants whose consumers are away cost no registry read."""
        found = set()
        for live in self._broker.table.live.values():
            identity = identity_of(live.connection.session)
            if identity is not None and identity.is_service and live.connection.connack_sent:
                found.add(identity.tenant_id)
        return found

    async def deliver_event(self, tenant_id: str, topic: str, payload: bytes, ack_within: float) -> bool:
        consumers = self._event_consumers(tenant_id, topic)
        results = await asyncio.gather(
            *(
                asyncio.wait_for(c.flows.send(c, Outgoing(topic, payload, 1), keep=False), ack_within)
                for c in consumers
            ),
            return_exceptions=True,
        )
        return any(not isinstance(r, BaseException) for r in results)

    def _event_consumers(self, tenant_id: str, topic: str) -> list[Connection]:
        """Connections of the tenant's service accounts subscribed to `topic` (found through the
        subscription index: the cost does not grow with the number of connected devices)."""
        broker = self._broker
        consumers: dict[str, Connection] = {}
        for key, _qos, _filter in broker.router.index.match(tenant_id, topic):
            live = broker.table.live.get(key)
            if live is None or key in consumers or not live.connection.connack_sent:  # [MQTT-3.2.0-1]
                continue
            identity = identity_of(live.connection.session)
            if identity is None or not identity.is_service or identity.tenant_id != tenant_id:
                continue
            if broker.allowed(live.connection.session, topic, Action.RECEIVE):
                consumers[key] = live.connection
        return list(consumers.values())

    async def kick(self, match: Callable[[DeviceIdentity], bool], detail: str) -> int:
        return await self._broker.close_sessions(match, reason=CloseReason.KICKED, detail=detail)
