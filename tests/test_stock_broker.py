"""The device-auth and topic-access plugins in a stock amqtt 0.12.1 broker, started by amqtt's own CLI
from the YAML config we ship (config/amqtt-stock-broker.example.yaml, docs/amqtt-plugins.md)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import make_device
from .wire import RawClient, connack, connect_packet, publish_fields, publish_packet, subscribe_packet

EXAMPLE = Path(__file__).parent.parent / "config" / "amqtt-stock-broker.example.yaml"
ACCEPTED, NOT_AUTHORIZED = b"\x20\x02\x00\x00", b"\x20\x02\x00\x05"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        assert proc.poll() is None, "amqtt exited"
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError("amqtt did not listen")


@pytest.fixture
async def stock_port(gateway: Gateway, tmp_path: Path) -> AsyncIterator[int]:
    """`amqtt -c <the example, with this test's registry and a free port>`."""
    port = _free_port()
    config = EXAMPLE.read_text()
    config = config.replace("127.0.0.1:1884", f"127.0.0.1:{port}")
    config = config.replace("gateway-data/registry.sqlite3", str(gateway.settings.registry_path))
    path = tmp_path / "amqtt.yaml"
    path.write_text(config)
    command = shutil.which("amqtt")
    args = [command] if command else [sys.executable, "-m", "amqtt.scripts.broker_script"]
    proc = subprocess.Popen([*args, "-c", str(path)], cwd=tmp_path)
    try:
        await _listening(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def test_the_example_config_authenticates_devices_by_the_gateways_registry(
    api: httpx.AsyncClient, stock_port: int
) -> None:
    token = await make_device(api)
    assert await connack(stock_port, connect_packet("c1", token)) == ACCEPTED
    assert await connack(stock_port, connect_packet("c2", "no-such-token")) == NOT_AUTHORIZED
    assert await connack(stock_port, connect_packet("c3", None)) == NOT_AUTHORIZED


async def test_the_topic_plugin_keeps_a_device_below_its_own_token(api: httpx.AsyncClient, stock_port: int) -> None:
    mine = await make_device(api, device="dev-1")
    other = await make_device(api, device="dev-2")
    client = await RawClient.open(stock_port)
    try:
        await client.send(connect_packet("c1", mine))
        assert await client.read_packet() == ACCEPTED
        await client.send(subscribe_packet(1, f"kp1/v1/app/{other}/#"))
        assert await client.read_packet() == b"\x90\x03\x00\x01\x80"  # refused
        await client.send(subscribe_packet(2, f"kp1/v1/app/{mine}/#"))
        assert await client.read_packet() == b"\x90\x03\x00\x02\x00"
        await client.send(publish_packet(f"kp1/v1/app/{other}/x", b"spoof"))
        await client.send(publish_packet(f"kp1/v1/app/{mine}/x", b"mine"))
        message = await client.read_packet()
        assert message is not None and publish_fields(message)[3] == b"mine"  # the spoof went nowhere
    finally:
        await client.close()


async def test_names_unique_only_within_a_tenant_are_no_topics_in_a_stock_broker(
    gateway: Gateway, api: httpx.AsyncClient, stock_port: int
) -> None:
    """Issue 17: a password device is named in topics by its device id, unique only within its tenant.
    The gateway's router keeps tenants' topics apart; a stock broker has one topic space and its RECEIVE
    check cannot tell who published, so there two tenants' `kettle-1` would read each other: such names
    are no topics there (bearer tokens, unique across tenants, still are)."""
    for tenant in ("acme", "globex"):
        await api.post("/v1/tenants", json={"id": tenant})
        await api.post(f"/v1/tenants/{tenant}/devices", json={"id": "kettle-1", "appVersion": "v1"})
        r = await api.put(f"/v1/tenants/{tenant}/devices/kettle-1/passwords/k1", json={"password": "s3cret pass"})
        assert r.status_code == 200, r.text
    for port, granted in ((gateway.ports["mqtt"], 0x00), (stock_port, 0x80)):
        client = await RawClient.open(port)
        try:
            await client.send(connect_packet("c1", "k1@globex", "s3cret pass"))
            assert await client.read_packet(timeout=10) == ACCEPTED
            await client.send(subscribe_packet(1, "kp1/v1/app/kettle-1/#"))
            assert await client.read_packet() == b"\x90\x03\x00\x01" + bytes([granted])
        finally:
            await client.close()
