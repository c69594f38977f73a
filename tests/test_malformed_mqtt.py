"""Malformed MQTT input closes that one connection, is counted, and disturbs nobody else."""

from __future__ import annotations

import struct

import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import make_device, mqtt, next_message, ok
from .wire import RawClient, connect_packet


def _connect_with_raw_username(username: bytes) -> bytes:
    body = struct.pack("!H", 4) + b"MQTT" + bytes([4, 0x82]) + struct.pack("!H", 60)
    body += struct.pack("!H", 1) + b"c" + struct.pack("!H", len(username)) + username
    return b"\x10" + bytes([len(body)]) + body


@pytest.mark.parametrize(
    ("first_bytes", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "first_packet_not_connect"),
        (b"\x30\x02\x00\x00", "first_packet_not_connect"),  # PUBLISH before CONNECT
        (b"\x10\xff\xff\xff\xff\x01", "malformed_remaining_length"),
        (b"\x10\xff\xff\x7f" + b"\x00" * 16, "connect_too_large"),
        (b"\x10\x07\x00\x04XXXX\x04", "unknown_protocol_name"),
        (b"\x10\x01\x00", "malformed_connect"),
        (b"\x10\x05\x00", "connect_timeout"),  # announced 5 bytes, sent 1: waits, then times out,
        (_connect_with_raw_username(b"\xff\xfe\xfd"), "invalid_utf8"),  # [MQTT-1.5.3-1]
        (_connect_with_raw_username(b"tok\x00en"), "invalid_utf8"),  # [MQTT-1.5.3-2]
    ],
)
async def test_bad_first_packet_closes_the_socket(
    gateway: Gateway, api: httpx.AsyncClient, first_bytes: bytes, reason: str
) -> None:
    token = await make_device(api)
    async with mqtt(gateway, token, client_id="bystander") as bystander:
        await bystander.subscribe(f"kp1/v1/app/{token}/#")
        raw = await RawClient.open(gateway.ports["mqtt"])
        try:
            await raw.send(first_bytes)
            assert await raw.closed_by_peer(2.0)
        finally:
            await raw.close()
        await bystander.publish(f"kp1/v1/app/{token}/still-alive", b"1")
        assert (await next_message(bystander)) is not None
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["connectsRefused"].get(reason) == 1, metrics


async def test_garbage_after_connack_closes_only_that_connection(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    async with mqtt(gateway, token, client_id="bystander") as bystander:
        await bystander.subscribe(f"kp1/v1/app/{token}/#")
        raw = await RawClient.open(gateway.ports["mqtt"])
        try:
            await raw.send(connect_packet("bad", token))
            assert await raw.read_packet() == b"\x20\x02\x00\x00"
            await raw.send(b"\x00\x00")  # reserved packet type 0
            assert await raw.closed_by_peer(2.0)
        finally:
            await raw.close()
        await bystander.publish(f"kp1/v1/app/{token}/x", b"1")
        assert (await next_message(bystander)) is not None


async def test_publish_with_wildcard_topic_closes_the_connection(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("c", token))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        topic = f"kp1/v1/app/{token}/#".encode()
        await raw.send(b"\x30" + bytes([2 + len(topic) + 1]) + struct.pack("!H", len(topic)) + topic + b"x")
        assert await raw.closed_by_peer(2.0)  # [MQTT-3.3.2-2]
    finally:
        await raw.close()


async def test_mqtt31_is_unacceptable_protocol_version(gateway: Gateway) -> None:
    body = struct.pack("!H", 6) + b"MQIsdp" + bytes([3, 0x02]) + struct.pack("!H", 60) + struct.pack("!H", 1) + b"c"
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(b"\x10" + bytes([len(body)]) + body)
        assert await raw.read_packet() == b"\x20\x02\x00\x01"
        assert await raw.closed_by_peer(1.0)
    finally:
        await raw.close()


async def test_packet_over_the_size_limit_closes_the_connection(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("c", token))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        # announce a 10 MB PUBLISH: closed on the header, before any of it is read
        await raw.send(b"\x30\x80\xad\xe2\x04")
        assert await raw.closed_by_peer(2.0)
    finally:
        await raw.close()
    status = await ok(api.get("/v1/tenants/acme/devices/dev-1/connection"))
    assert status["log"][0]["reason"] == "protocol_error" and "over the limit" in status["log"][0]["detail"]


async def test_second_connect_is_a_protocol_error(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("c", token))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        await raw.send(connect_packet("c", token))  # [MQTT-3.1.0-2]
        assert await raw.closed_by_peer(2.0)
    finally:
        await raw.close()
