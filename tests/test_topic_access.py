"""Point 4: a device may publish and subscribe only below its own token, and never receives others' messages."""

from __future__ import annotations

from pathlib import Path

import aiomqtt
import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import make_device, mqtt, next_message, ok
from .wire import RawClient, connect_packet, publish_packet, subscribe_packet

SUBACK_FAILURE = 0x80


@pytest.mark.parametrize(
    "topic_filter",
    [
        "#",
        "+",
        "kp1/#",
        "kp1/+/+/+/#",
        "kp1/v1/+/{token}/#",
        "kp1/+/app/{token}/#",
        "kp1/v1/app/+/#",
        "kp1/v1/app/{other}/#",
        "kp1/v1/app/{token}",
        "$SYS/#",
        "$gateway/events/acme/#",
        "kp2/v1/app/{token}/x",
    ],
)
async def test_forbidden_subscriptions_get_0x80(gateway: Gateway, api: httpx.AsyncClient, topic_filter: str) -> None:
    token = await make_device(api)
    other = await make_device(api, "globex", "dev-2")
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("c1", token))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        await raw.send(subscribe_packet(7, topic_filter.format(token=token, other=other)))
        assert await raw.read_packet() == b"\x90\x03\x00\x07" + bytes([SUBACK_FAILURE])
    finally:
        await raw.close()
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["subscriptionsDenied"] == 1


@pytest.mark.parametrize("topic_filter", ["kp1/v1/app/{token}/#", "kp1/v1/app/{token}/+/status", "kp1/v2/x/{token}/a"])
async def test_own_subscriptions_are_granted(gateway: Gateway, api: httpx.AsyncClient, topic_filter: str) -> None:
    token = await make_device(api)
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("c1", token))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        await raw.send(subscribe_packet(9, topic_filter.format(token=token), qos=1))
        assert await raw.read_packet() == b"\x90\x03\x00\x09\x01"
    finally:
        await raw.close()


async def test_device_never_receives_another_devices_messages(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token_a = await make_device(api, "acme", "dev-a")
    token_b = await make_device(api, "acme", "dev-b")
    token_c = await make_device(api, "globex", "dev-c")
    async with (
        mqtt(gateway, token_a, client_id="a") as a,
        mqtt(gateway, token_b, client_id="b") as b,
        mqtt(gateway, token_c, client_id="c") as c,
    ):
        await a.subscribe(f"kp1/v1/app/{token_a}/#")
        # b and c try every way to reach a's topics; the broker drops each publish
        for client in (b, c):
            await client.publish(f"kp1/v1/app/{token_a}/x", b"spoof", qos=1)
            await client.publish("kp1/v1/app/+/x".replace("+", token_a), b"spoof2", qos=0)
        await a.publish(f"kp1/v1/app/{token_a}/own", b"mine", qos=1)
        msg = await next_message(a)
        assert msg is not None and msg.payload == b"mine"
        assert await next_message(a, timeout=0.5) is None
        metrics = await ok(api.get("/v1/metrics"))
        assert metrics["publishesDenied"] == 4


async def test_publish_to_other_device_is_dropped_not_delivered_to_its_owner(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    token_a = await make_device(api, "acme", "dev-a")
    token_b = await make_device(api, "acme", "dev-b")
    async with mqtt(gateway, token_a, client_id="a") as a, mqtt(gateway, token_b, client_id="b") as b:
        await b.subscribe(f"kp1/v1/app/{token_b}/#")
        await a.publish(f"kp1/v1/app/{token_b}/cmd", b"from-a", qos=1)
        assert await next_message(b, timeout=0.5) is None


async def test_will_topic_of_another_device_is_refused_at_connect(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token_a = await make_device(api, "acme", "dev-a")
    token_b = await make_device(api, "acme", "dev-b")
    will = aiomqtt.Will(topic=f"kp1/v1/app/{token_b}/will", payload=b"x")
    with pytest.raises(aiomqtt.MqttCodeError):
        async with mqtt(gateway, token_a, will=will):
            pass
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["connectsRefused"] == {"will_topic_denied": 1}
    own_will = aiomqtt.Will(topic=f"kp1/v1/app/{token_a}/will", payload=b"x")
    async with mqtt(gateway, token_a, will=own_will):
        pass


async def test_retained_message_is_not_replayed_to_other_devices(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """Stock defect 1: on CONNECT amqtt replayed retained messages of every filter anyone subscribed to."""
    token_a = await make_device(api, "acme", "dev-a")
    token_b = await make_device(api, "acme", "dev-b")
    async with mqtt(gateway, token_a, client_id="a") as a:
        await a.subscribe(f"kp1/v1/app/{token_a}/#")
        await a.publish(f"kp1/v1/app/{token_a}/state", b"secret-retained", retain=True, qos=1)
        assert (await next_message(a)) is not None
        raw = await RawClient.open(gateway.ports["mqtt"])
        try:
            await raw.send(connect_packet("b", token_b))
            assert await raw.read_packet() == b"\x20\x02\x00\x00"
            assert await raw.silent_for(0.7)
        finally:
            await raw.close()
    # the owner still gets its own retained message when it subscribes again
    async with mqtt(gateway, token_a, client_id="a2") as a2:
        await a2.subscribe(f"kp1/v1/app/{token_a}/state")
        msg = await next_message(a2)
        assert msg is not None and msg.payload == b"secret-retained" and msg.retain


async def test_dollar_topics_cannot_be_published(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("c", token))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        await raw.send(publish_packet("$gateway/events/acme/x", b"forged"))
        # [MQTT-4.7.2-1]: the connection is closed
        assert await raw.closed_by_peer(2.0)
    finally:
        await raw.close()


async def test_retained_messages_do_not_outlive_their_device(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api, "acme", "old", token="reused-token-Qw8Zr2Lk5Tm1")
    async with mqtt(gateway, token, client_id="old") as old:
        await old.subscribe(f"kp1/v1/app/{token}/#")
        await old.publish(f"kp1/v1/app/{token}/state", b"old owner's secret", retain=True, qos=1)
        assert await next_message(old) is not None
    await ok(api.delete("/v1/tenants/acme/devices/old"), 204)
    await make_device(api, "acme", "new", token="reused-token-Qw8Zr2Lk5Tm1")
    async with mqtt(gateway, token, client_id="new") as new:
        await new.subscribe(f"kp1/v1/app/{token}/#")
        assert await next_message(new, timeout=0.7) is None


async def test_a_foreign_publish_is_dropped_but_a_dollar_publish_closes_as_documented(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """Issue 17: a device publishing to a `$` topic lost its connection and nothing in docs/ said so."""
    token = await make_device(api)
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("c", token))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        await raw.send(publish_packet("kp1/v1/app/someone-else/state", b"x", packet_id=7))
        assert await raw.read_packet() == b"\x40\x02\x00\x07"  # PUBACK; dropped, still connected
        await raw.send(publish_packet("$SYS/broker/uptime", b"x", packet_id=8))
        assert await raw.closed_by_peer(2.0)
    finally:
        await raw.close()
    documented = " ".join((Path(__file__).parent.parent / "docs" / "security.md").read_text().split())
    assert (
        "a PUBLISH to any topic that starts with `$` (`$SYS/...`, `$gateway/...`) closes the connection" in documented
    )
    assert "acknowledged as usual (PUBACK at QoS 1) and dropped, and the connection stays" in documented
