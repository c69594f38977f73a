"""The six defects of amqtt 0.12.1's stock Broker (docs/broker-hardening.md), as regression tests.

Each scenario runs twice: against the gateway, which must behave, and against a bare amqtt Broker
started in the same test, which must still show the defect. The second half proves the scenario
really catches the defect; if an amqtt upgrade fixes one, it fails and tells us to re-check.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from amqtt.broker import Broker

from gateway.node.runtime import Gateway
from pki.devca import ensure_server_tls

from .conftest import make_device, ok, wait_until
from .wire import RawClient, connect_packet, publish_packet, subscribe_packet

ACCEPTED = b"\x20\x02\x00\x00"


@dataclass
class Target:
    name: str
    port: int
    tls_port: int
    ca_path: Path
    good: list[str]  # usernames of two devices that may connect
    bad: str  # a username that is refused
    topic: Callable[[int], str]  # a topic that device i owns
    sessions: Callable[[], dict[str, Any]]  # session key -> session
    offline: Callable[[Any], bool]  # a kept session whose client is away


@pytest.fixture
async def target_gateway(gateway: Gateway, api: httpx.AsyncClient) -> Target:
    tokens = [await make_device(api, "acme", "dev-a"), await make_device(api, "acme", "dev-b")]
    assert gateway.broker is not None and gateway.tls is not None
    broker = gateway.broker
    return Target(
        "gateway",
        gateway.ports["mqtt"],
        gateway.ports["mqtts"],
        gateway.tls.ca_path,
        tokens,
        "no-such-token",
        lambda i: f"kp1/v1/app/{tokens[i]}/state",
        lambda: broker.sessions,
        lambda session: not session.connected,
    )


@pytest.fixture
async def target_stock(tmp_path: Path) -> AsyncIterator[Target]:
    tls = ensure_server_tls(tmp_path / "tls", ["localhost", "127.0.0.1"])
    broker = Broker(
        {
            "listeners": {
                "default": {"type": "tcp", "bind": "127.0.0.1:0"},
                "tls": {
                    "type": "tcp",
                    "bind": "127.0.0.1:0",
                    "ssl": True,
                    "certfile": str(tls.cert_path),
                    "keyfile": str(tls.key_path),
                },
            },
            "plugins": {"tests.stock_plugins.AllowGoodUsernames": {}},
        }
    )
    await broker.start()
    port = broker._servers["default"].instance.sockets[0].getsockname()[1]
    tls_port = broker._servers["tls"].instance.sockets[0].getsockname()[1]
    try:
        yield Target(
            "stock",
            port,
            tls_port,
            tls.ca_path,
            ["good-a", "good-b"],
            "bad",
            lambda i: f"t/{i}/state",
            lambda: {key: session for key, (session, _) in broker.sessions.items()},
            lambda session: session.transitions.state != "connected",
        )
    finally:
        await broker.shutdown()


async def _connected(port: int, client_id: str, username: str, **kwargs: object) -> RawClient:
    raw = await RawClient.open(port)
    await raw.send(connect_packet(client_id, username, **kwargs))  # type: ignore[arg-type]
    reply = await raw.read_packet()
    assert reply is not None and reply[:2] == b"\x20\x02" and reply[3] == 0, reply
    return raw


# -- 1. retained messages leak past the ACL ----------------------------------------------------


async def retained_leaks(t: Target) -> bool:
    owner = await _connected(t.port, "owner", t.good[0])
    await owner.send(subscribe_packet(1, t.topic(0)))
    assert (await owner.read_packet() or b"")[0] == 0x90
    await owner.send(publish_packet(t.topic(0), b"private", retain=True))
    assert (await owner.read_packet() or b"")[0] == 0x30  # its own echo
    other = await _connected(t.port, "other", t.good[1])
    leaked = not await other.silent_for(0.7)
    await owner.close()
    await other.close()
    return leaked


# -- 2. a failed CONNECT with a victim's client id wipes the victim's session ------------------


async def failed_connect_wipes_victim(t: Target) -> bool:
    victim = await _connected(t.port, "victim", t.good[0])
    await victim.send(subscribe_packet(1, t.topic(0)))
    assert (await victim.read_packet() or b"")[0] == 0x90
    attacker = await RawClient.open(t.port)
    await attacker.send(connect_packet("victim", t.bad))
    assert await attacker.read_packet() == b"\x20\x02\x00\x05"
    await attacker.close()
    await victim.send(publish_packet(t.topic(0), b"still there?"))
    wiped = await victim.silent_for(0.7)
    await victim.close()
    return wiped


# -- 3. no takeover on a duplicate client id ----------------------------------------------------


async def duplicate_left_open(t: Target) -> bool:
    first = await _connected(t.port, "dup", t.good[0])
    second = await _connected(t.port, "dup", t.good[0])
    left_open = not await first.closed_by_peer(1.5)
    await first.close()
    await second.close()
    return left_open


# -- 4. a persistent-session reconnect keeps the previous connection's TLS identity -------------


async def stale_tls_identity(t: Target) -> bool:
    context = ssl.create_default_context(cafile=str(t.ca_path))
    reader, writer = await asyncio.open_connection("localhost", t.tls_port, ssl=context)
    tls_client = RawClient(reader, writer)
    await tls_client.send(connect_packet("keep", t.good[0], clean=False))
    assert await tls_client.read_packet() == ACCEPTED
    await tls_client.send(b"\xe0\x00")  # DISCONNECT
    await tls_client.close()
    await wait_until(lambda: _offline(t, "keep"))
    plain = await RawClient.open(t.port)
    await plain.send(connect_packet("keep", t.good[0], clean=False))
    assert await plain.read_packet() == b"\x20\x02\x01\x00"  # session present
    resumed = [s for key, s in t.sessions().items() if key.endswith("keep")]
    stale = getattr(resumed[0], "ssl_object", None) is not None
    await plain.close()
    return stale


# -- 5. no CONNECT timeout ------------------------------------------------------------------------


async def silent_socket_stays_open(t: Target) -> bool:
    raw = await RawClient.open(t.port)
    stays = not await raw.closed_by_peer(2.5)  # gateway tests use connect_timeout = 1 s
    await raw.close()
    return stays


# -- 6. MQTT 5 CONNECT hangs ------------------------------------------------------------------------


async def mqtt5_hangs(t: Target) -> bool:
    raw = await RawClient.open(t.port)
    await raw.send(connect_packet("five", t.good[0], level=5))
    try:
        reply = await raw.read_packet(timeout=2.0)
    except TimeoutError:
        return True
    finally:
        await raw.close()
    assert reply == b"\x20\x02\x00\x01"  # unacceptable protocol version
    return False


SCENARIOS = [
    retained_leaks,
    failed_connect_wipes_victim,
    duplicate_left_open,
    stale_tls_identity,
    silent_socket_stays_open,
    mqtt5_hangs,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
async def test_gateway_does_not_have_the_defect(target_gateway: Target, scenario: Callable[..., object]) -> None:
    assert await scenario(target_gateway) is False  # type: ignore[misc]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
async def test_stock_amqtt_still_has_the_defect(target_stock: Target, scenario: Callable[..., object]) -> None:
    assert await scenario(target_stock) is True  # type: ignore[misc]


async def test_mqtt5_client_gets_a_prompt_refusal(gateway: Gateway) -> None:
    import aiomqtt

    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            "127.0.0.1", gateway.ports["mqtt"], username="x", protocol=aiomqtt.ProtocolVersion.V5, timeout=5
        ):
            pass
    assert loop.time() - start < 1.0


async def test_sockets_over_max_connections_are_closed_at_once(tmp_path: Path) -> None:
    from .conftest import test_settings

    gw = Gateway(test_settings(tmp_path, max_connections=2, connect_timeout=5.0))
    await gw.start()
    try:
        held = [await RawClient.open(gw.ports["mqtt"]) for _ in range(2)]
        await wait_until(lambda: _open_sockets(gw, 2))
        extra = await RawClient.open(gw.ports["mqtt"])
        assert await extra.closed_by_peer(0.5)
        for raw in [*held, extra]:
            await raw.close()
        await wait_until(lambda: _open_sockets(gw, 0))
        again = await RawClient.open(gw.ports["mqtt"])  # capacity is back
        assert await again.silent_for(0.3)
        await again.close()
        assert gw.services.metrics.connects_refused["max_connections"] == 1
    finally:
        await gw.stop()


async def _open_sockets(gw: Gateway, n: int) -> bool:
    assert gw.broker is not None
    return gw.broker.open_sockets == n


async def _offline(t: Target, client_id: str) -> bool:
    """The session with this client id is kept and no longer connected (stock and gateway alike)."""
    sessions = [s for key, s in t.sessions().items() if key.endswith(client_id)]
    return bool(sessions) and t.offline(sessions[0])


async def test_resumed_session_is_reauthenticated(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    raw = await _connected(gateway.ports["mqtt"], "keep", token, clean=False)
    await raw.send(b"\xe0\x00")
    await raw.close()
    await ok(api.patch(f"/v1/tenants/acme/tokens/{token}", json={"state": "suspended"}))
    again = await RawClient.open(gateway.ports["mqtt"])
    await again.send(connect_packet("keep", token, clean=False))
    assert await again.read_packet() == b"\x20\x02\x00\x05"
    await again.close()
