"""A TLS MQTT CONNECT with a client certificate from files, returning the CONNACK bytes."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from gateway.node.runtime import Gateway

from .wire import RawClient, connect_packet


async def tls_connack_files(gateway: Gateway, cert: Path, key: Path) -> bytes | None:
    assert gateway.tls is not None
    context = ssl.create_default_context(cafile=str(gateway.tls.ca_path))
    context.load_cert_chain(cert, key)
    reader, writer = await asyncio.open_connection("localhost", gateway.ports["mqtts"], ssl=context)
    raw = RawClient(reader, writer)
    try:
        await raw.send(connect_packet("cli-test", None))
        return await raw.read_packet()
    finally:
        await raw.close()
