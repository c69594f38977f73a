"""One client's MQTT session: what its CONNECT said, and the state a persistent session keeps.

A plain object (amqtt builds a `transitions` state machine per session, a third of its CONNECT
cost). It carries the fields of amqtt's Session that plugins read (amqtt_api.SESSION_FIELDS).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any

from .connect_packet import ConnectFields

# fields a resumed persistent session takes from the new CONNECT (everything but its state)
_FROM_CONNECT = (
    "clean_session",
    "username",
    "password",
    "remote_address",
    "remote_port",
    "ssl_object",
    "keep_alive",
    "will_flag",
    "will_topic",
    "will_message",
    "will_qos",
    "will_retain",
)


@dataclass(eq=False, slots=True)
class ClientSession:
    client_id: str
    clean_session: bool
    keep_alive: int
    username: str | None = None
    password: str | None = None
    remote_address: str | None = None
    remote_port: int | None = None
    ssl_object: ssl.SSLObject | None = None
    will_flag: bool = False
    will_topic: str | None = None
    will_message: bytes | None = None
    will_qos: int = 0
    will_retain: bool = False
    attributes: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    """Where the session table keeps it: `<tenant>/<device>/<client id>` (identity.session_key)."""
    resumed: bool = False
    connected: bool = False
    qos2_awaiting_pubrel: set[int] = field(default_factory=set)
    """Incoming QoS 2 packet ids received and not yet released (method B of [MQTT-4.3.3])."""
    qos2_processing: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    """Those of them still being processed (a 10/EPMP write not yet committed): a duplicate PUBLISH
    is acknowledged only when the original is, whichever connection sent it."""

    @classmethod
    def of(
        cls, connect: ConnectFields, peer: tuple[str, int] | None, ssl_object: ssl.SSLObject | None
    ) -> ClientSession:
        return cls(
            client_id=connect.client_id,
            clean_session=connect.clean_session,
            keep_alive=connect.keep_alive,
            username=connect.username,
            password=connect.password,
            remote_address=peer[0] if peer else None,
            remote_port=peer[1] if peer else None,
            ssl_object=ssl_object,
            will_flag=connect.will_topic is not None,
            will_topic=connect.will_topic,
            will_message=connect.will_message,
            will_qos=connect.will_qos,
            will_retain=connect.will_retain,
        )

    def resume_with(self, incoming: ClientSession) -> None:
        """A persistent session resumed by an authenticated CONNECT: connection facts and identity come
        from that CONNECT, never from the previous connection (stock defect 4); state stays."""
        for name in _FROM_CONNECT:
            setattr(self, name, getattr(incoming, name))
        self.attributes = dict(incoming.attributes)
        self.resumed = True

    @property
    def peer(self) -> str:
        return f"{self.remote_address}:{self.remote_port}"
