"""Point 5: connection status, the bounded connection log, and every disconnect reason."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from gateway.node.runtime import Gateway

from .conftest import (
    admin_http,
    api_client,
    connection,
    make_device,
    mqtt,
    next_message,
    ok,
    served_ports,
    spawn_gateway,
    test_settings,
    wait_until,
)
from .wire import RawClient, connect_packet


async def test_status_while_connected_and_after(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    never = await connection(api, "acme", "dev-1")
    assert never == {
        "connected": False,
        "sessions": 0,
        "lastConnectedAt": None,
        "lastDisconnectedAt": None,
        "remoteAddress": None,
        "node": None,
        "log": [],
    }
    async with mqtt(gateway, token, client_id="kettle"):
        live = await connection(api, "acme", "dev-1")
        assert live["connected"] is True and live["sessions"] == 1
        assert live["node"] == "test-node" and live["remoteAddress"] == "127.0.0.1"
        assert live["lastConnectedAt"] is not None and live["lastDisconnectedAt"] is None
        assert live["log"][0]["event"] == "connected" and live["log"][0]["clientId"] == "kettle"
    await wait_until(lambda: _disconnected(api))
    after = await connection(api, "acme", "dev-1")
    assert after["lastDisconnectedAt"] >= after["lastConnectedAt"]
    assert [e["event"] for e in after["log"]] == ["disconnected", "connected"]
    assert after["log"][0]["reason"] == "client_disconnect"


async def test_two_sessions_of_one_device(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    async with mqtt(gateway, token, client_id="one"):
        async with mqtt(gateway, token, client_id="two"):
            assert (await connection(api, "acme", "dev-1"))["sessions"] == 2
        await wait_until(lambda: _sessions(api, 1))
    await wait_until(lambda: _disconnected(api))


async def test_socket_error_reason(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    raw = await RawClient.open(gateway.ports["mqtt"])
    await raw.send(connect_packet("c", token))
    assert await raw.read_packet() == b"\x20\x02\x00\x00"
    raw.writer.transport.abort()  # no DISCONNECT packet
    await wait_until(lambda: _last_reason(api, "socket_error"))


async def test_keepalive_timeout_reason(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("c", token, keepalive=1))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        # silent client: closed after 1.5 x keep-alive [MQTT-3.1.2-24]
        assert await raw.closed_by_peer(4.0)
    finally:
        await raw.close()
    await wait_until(lambda: _last_reason(api, "keepalive_timeout"))


async def test_takeover_reason(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    first = await RawClient.open(gateway.ports["mqtt"])
    await first.send(connect_packet("same-id", token))
    assert await first.read_packet() == b"\x20\x02\x00\x00"
    async with mqtt(gateway, token, client_id="same-id"):
        assert await first.closed_by_peer(2.0)
        status = await connection(api, "acme", "dev-1")
        assert status["sessions"] == 1
        assert status["log"][1]["reason"] == "session_taken_over"
    await first.close()


async def test_connection_log_is_bounded(tmp_path: Path) -> None:
    gw = Gateway(test_settings(tmp_path, connection_log_limit=5))
    await gw.start()
    try:
        async with api_client(gw) as api:
            token = await make_device(api)
            for _ in range(6):
                async with mqtt(gw, token):
                    pass
                await wait_until(lambda: _disconnected(api))
            status = await connection(api, "acme", "dev-1")
            assert len(status["log"]) == 5
            assert status["log"][0]["event"] == "disconnected"
    finally:
        await gw.stop()


async def test_gateway_shutdown_reason_and_consistent_registry(tmp_path: Path) -> None:
    gw = Gateway(test_settings(tmp_path))
    await gw.start()
    async with api_client(gw) as api:
        token = await make_device(api)
    raw = await RawClient.open(gw.ports["mqtt"])
    await raw.send(connect_packet("c", token))
    assert await raw.read_packet() == b"\x20\x02\x00\x00"
    await gw.stop()
    assert await raw.closed_by_peer(1.0)
    await raw.close()
    gw2 = Gateway(test_settings(tmp_path))
    await gw2.start()
    try:
        async with api_client(gw2) as api:
            status = await connection(api, "acme", "dev-1")
            assert status["connected"] is False
            assert status["log"][0]["reason"] == "gateway_shutdown"
    finally:
        await gw2.stop()


async def test_kill_9_then_restart_marks_stale_sessions(tmp_path: Path) -> None:
    """A crashed node leaves live-session rows; the next start of the same node closes them."""
    data_dir = tmp_path / "data"
    settings = test_settings(data_dir, node_id="crash-node")
    proc = spawn_gateway(data_dir, "crash-node")
    try:
        ports = await served_ports(data_dir, proc)
        async with admin_http(data_dir, ports) as api:
            token = await make_device(api)
            raw = await RawClient.open(ports["mqtt"])
            await raw.send(connect_packet("c", token))
            assert await raw.read_packet() == b"\x20\x02\x00\x00"
            assert (await connection(api, "acme", "dev-1"))["connected"] is True
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
            await raw.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    gw = Gateway(settings)
    await gw.start()
    try:
        async with api_client(gw) as api:
            status = await connection(api, "acme", "dev-1")
            assert status["connected"] is False
            assert status["log"][0]["reason"] == "gateway_restart"
            assert status["lastDisconnectedAt"] is not None
    finally:
        await gw.stop()


async def _disconnected(api: httpx.AsyncClient) -> bool:
    return (await connection(api, "acme", "dev-1"))["connected"] is False


async def _sessions(api: httpx.AsyncClient, n: int) -> bool:
    return (await connection(api, "acme", "dev-1"))["sessions"] == n


async def _last_reason(api: httpx.AsyncClient, reason: str) -> bool:
    status = await connection(api, "acme", "dev-1")
    return bool(status["log"]) and status["log"][0]["reason"] == reason and not status["connected"]


async def test_publish_then_disconnect_in_one_write_is_delivered(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """What mosquitto_pub does: CONNECT, PUBLISH, DISCONNECT, close, as fast as it can."""
    from .wire import publish_packet

    token = await make_device(api)
    async with mqtt(gateway, token, client_id="listener") as listener:
        await listener.subscribe(f"kp1/v1/app/{token}/#")
        for i in range(5):
            raw = await RawClient.open(gateway.ports["mqtt"])
            await raw.send(
                connect_packet(f"burst{i}", token) + publish_packet(f"kp1/v1/app/{token}/m", b"%d" % i) + b"\xe0\x00"
            )
            await raw.close()
        got = []
        for _ in range(5):
            message = await next_message(listener)
            assert message is not None
            got.append(message.payload)
        assert sorted(got) == [b"0", b"1", b"2", b"3", b"4"]
    await wait_until(lambda: _disconnected(api))
    status = await connection(api, "acme", "dev-1")
    reasons = [e["reason"] for e in status["log"] if e["event"] == "disconnected"]
    assert reasons.count("client_disconnect") == 6, reasons


async def test_rendezvous_view_pages_connected_devices(gateway: Gateway, api: httpx.AsyncClient) -> None:
    tokens = [await make_device(api, "acme", f"d{i}") for i in range(5)]
    await make_device(api, "globex", "g1")
    clients = [mqtt(gateway, tokens[i], client_id=f"c{i}") for i in (0, 2, 3, 4)]
    for c in clients:
        await c.__aenter__()
    try:
        page1 = await ok(api.get("/v1/tenants/acme/connected-devices", params={"limit": 2}))
        assert [d["id"] for d in page1["devices"]] == ["d0", "d2"] and page1["next"] == "d2"
        page2 = await ok(api.get("/v1/tenants/acme/connected-devices", params={"limit": 2, "after": "d2"}))
        assert [d["id"] for d in page2["devices"]] == ["d3", "d4"]
        page3 = await ok(api.get("/v1/tenants/acme/connected-devices", params={"limit": 2, "after": "d4"}))
        assert page3 == {"devices": [], "next": None}
        assert page1["devices"][0]["node"] == "test-node" and page1["devices"][0]["sessions"] == 1
        assert (await api.get("/v1/tenants/nope/connected-devices")).status_code == 404
    finally:
        for c in clients:
            await c.__aexit__(None, None, None)
