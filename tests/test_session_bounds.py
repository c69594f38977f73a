"""Security issue, item 6: everything one session can make the gateway hold is bounded."""

from __future__ import annotations

import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import connection, make_device, ok, wait_until
from .wire import (
    RawClient,
    ack_packet,
    connect_packet,
    publish_fields,
    publish_packet,
    subscribe_many,
    unsubscribe_packet,
)

ACCEPTED = b"\x20\x02\x00\x00"


async def _client(gateway: Gateway, token: str, client_id: str, *, clean: bool = True) -> RawClient:
    raw = await RawClient.open(gateway.ports["mqtt"])
    await raw.send(connect_packet(client_id, token, clean=clean))
    reply = await raw.read_packet()
    assert reply is not None and reply[:2] == b"\x20\x02" and reply[3] == 0, reply
    return raw


async def _suback(raw: RawClient, packet_id: int, filters: list[tuple[str, int]]) -> list[int]:
    await raw.send(subscribe_many(packet_id, filters))
    reply = await raw.read_packet()
    assert reply is not None and reply[0] == 0x90, reply
    return list(reply[4:])


async def _resume(gateway: Gateway, token: str, count: int, *, then_silent: bool = False) -> list[bytes]:
    """Reconnects the persistent session `kept` (session present) and reads `count` messages, acking each."""
    back = await RawClient.open(gateway.ports["mqtt"])
    try:
        await back.send(connect_packet("kept", token, clean=False))
        assert await back.read_packet() == b"\x20\x02\x01\x00"  # session present
        got = []
        for _ in range(count):
            message = await back.read_packet()
            assert message is not None
            _qos, _topic, packet_id, payload = publish_fields(message)
            got.append(payload)
            await back.send(ack_packet(4, packet_id or 0))
        if then_silent:
            assert await back.silent_for(0.3)  # nothing more, and not closed
        return got
    finally:
        await back.close()


def _qos2_awaiting_pubrel(gateway: Gateway, key: str) -> set[int]:
    assert gateway.broker is not None
    return gateway.broker.sessions[key].qos2_awaiting_pubrel


# -- incoming QoS 2 ---------------------------------------------------------------------------------------


@pytest.mark.gateway_settings(max_qos2_awaiting_pubrel=4)
async def test_unreleased_qos2_messages_are_bounded(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    topic = f"kp1/v1/app/{token}/q2"
    listener = await _client(gateway, token, "listener")
    publisher = await _client(gateway, token, "publisher")
    try:
        assert await _suback(listener, 1, [(topic, 2)]) == [2]
        for packet_id in range(1, 5):  # four messages, never released
            await publisher.send(publish_packet(topic, b"x" * 1000, packet_id=packet_id, qos=2))
            assert await publisher.read_packet() == ack_packet(5, packet_id)  # PUBREC
        ids = _qos2_awaiting_pubrel(gateway, "acme/dev-1/publisher")
        assert ids == {1, 2, 3, 4}  # ids only: method B keeps no payload
        # a duplicate of a kept id is acknowledged again and not delivered twice
        await publisher.send(publish_packet(topic, b"x" * 1000, packet_id=2, qos=2, dup=True))
        assert await publisher.read_packet() == ack_packet(5, 2)
        # the fifth unreleased message closes the connection
        await publisher.send(publish_packet(topic, b"x", packet_id=5, qos=2))
        assert await publisher.closed_by_peer(2.0)
        delivered = []
        while (message := await listener.read_packet(timeout=0.5)) is not None:
            if message[0] >> 4 == 3:
                delivered.append(message)
                await listener.send(ack_packet(5, publish_fields(message)[2] or 0))
            if len(delivered) == 4:
                break
        assert len(delivered) == 4
    finally:
        await listener.close()
        await publisher.close()
    log = (await connection(api, "acme", "dev-1"))["log"]
    closed = [e for e in log if e["event"] == "disconnected" and e["reason"] == "protocol_error"]
    assert closed and "QoS 2" in closed[0]["detail"]


async def test_released_qos2_frees_its_id(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    publisher = await _client(gateway, token, "p")
    try:
        for packet_id in range(1, 100):  # far more than the bound, each released
            await publisher.send(publish_packet(f"kp1/v1/app/{token}/t", b"m", packet_id=packet_id, qos=2))
            assert await publisher.read_packet() == ack_packet(5, packet_id)
            await publisher.send(ack_packet(6, packet_id))
            assert await publisher.read_packet() == ack_packet(7, packet_id)  # PUBCOMP
        assert _qos2_awaiting_pubrel(gateway, "acme/dev-1/p") == set()
    finally:
        await publisher.close()


# -- a subscriber that does not read ------------------------------------------------------------------------


@pytest.mark.gateway_settings(max_queued_messages=50, max_queued_bytes=262_144, slow_consumer_timeout=1.0)
async def test_a_subscriber_that_never_reads_is_bounded_and_then_closed(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    token = await make_device(api)
    other = await make_device(api, "globex", "g1")
    topic = f"kp1/v1/app/{token}/stream"
    deaf = await _client(gateway, token, "deaf")
    assert await _suback(deaf, 1, [(topic, 0)]) == [0]
    publisher = await _client(gateway, token, "publisher")
    bystander = await _client(gateway, other, "bystander")
    try:
        chunk = b"z" * 65_536
        for i in range(400):  # 26 MB at a client that reads nothing
            await publisher.send(publish_packet(topic, chunk, packet_id=(i % 60_000) + 1))
            assert await publisher.read_packet() == ack_packet(4, (i % 60_000) + 1)  # never blocked by the deaf one
        assert gateway.broker is not None
        delivery = gateway.broker.router.delivery_of("acme/dev-1/deaf")
        assert delivery is not None and len(delivery) <= 50 and delivery.queued_bytes <= 262_144
        assert gateway.services.metrics.messages_dropped > 0
        limits = gateway.services.metrics.limits_hit
        assert limits["max_queued_bytes"] + limits["max_queued_messages"] > 0
        # another tenant's device is served at once meanwhile
        g_topic = f"kp1/v1/app/{other}/echo"
        assert await _suback(bystander, 1, [(g_topic, 0)]) == [0]
        await bystander.send(publish_packet(g_topic, b"ping"))
        echoed = await bystander.read_packet(timeout=2.0)
        assert echoed is not None and publish_fields(echoed)[3] == b"ping"
        # the deaf subscriber is closed as a slow consumer once a write stalls past the timeout
        await wait_until(lambda: _slow_consumer_logged(api), timeout=10)
    finally:
        for raw in (deaf, publisher, bystander):
            await raw.close()


async def _slow_consumer_logged(api: httpx.AsyncClient) -> bool:
    log = (await connection(api, "acme", "dev-1"))["log"]
    return any(e["reason"] == "slow_consumer" for e in log)


@pytest.mark.gateway_settings(max_inflight_messages=3)
async def test_outgoing_qos1_in_flight_is_bounded(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    topic = f"kp1/v1/app/{token}/q1"
    sub = await _client(gateway, token, "sub")
    pub = await _client(gateway, token, "pub")
    try:
        assert await _suback(sub, 1, [(topic, 1)]) == [1]
        for i in range(1, 11):
            await pub.send(publish_packet(topic, b"%d" % i, packet_id=i))
            assert await pub.read_packet() == ack_packet(4, i)
        first = [await sub.read_packet() for _ in range(3)]
        assert all(m is not None and publish_fields(m)[0] == 1 for m in first)
        assert await sub.silent_for(0.5)  # three unacknowledged: nothing more is sent
        await sub.send(ack_packet(4, publish_fields(first[0] or b"")[2] or 0))
        fourth = await sub.read_packet()
        assert fourth is not None and publish_fields(fourth)[3] == b"4"
    finally:
        await sub.close()
        await pub.close()


# -- subscriptions -------------------------------------------------------------------------------------------


@pytest.mark.gateway_settings(max_subscriptions_per_session=5)
async def test_subscriptions_per_session_are_capped(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    raw = await _client(gateway, token, "many")
    try:
        filters = [(f"kp1/v1/app/{token}/f{i}", 1) for i in range(7)]
        assert await _suback(raw, 1, filters) == [1, 1, 1, 1, 1, 0x80, 0x80]
        # re-subscribing to a held filter replaces it (new QoS), even at the cap
        assert await _suback(raw, 2, [(filters[0][0], 0)]) == [0]
        # 1,000 more filters in ten packets: none is taken
        for n in range(10):
            batch = [(f"kp1/v1/app/{token}/x{n}/{i}", 0) for i in range(100)]
            assert set(await _suback(raw, 3 + n, batch)) == {0x80}
        # unsubscribing frees room
        await raw.send(unsubscribe_packet(14, [filters[1][0]]))
        assert (await raw.read_packet() or b"")[0] == 0xB0
        assert await _suback(raw, 20, [(f"kp1/v1/app/{token}/new", 1)]) == [1]
    finally:
        await raw.close()
    assert gateway.services.metrics.limits_hit["max_subscriptions_per_session"] == 1002


# -- retained messages ----------------------------------------------------------------------------------------


@pytest.mark.gateway_settings(
    max_retained_per_device=3, max_retained_messages=4, max_retained_bytes_per_device=10_000, tenant_retained_share=1.0
)
async def test_retained_messages_are_bounded_per_device_and_in_total(gateway: Gateway, api: httpx.AsyncClient) -> None:
    a = await make_device(api, "acme", "a")
    b = await make_device(api, "acme", "b")
    pub_a, pub_b = await _client(gateway, a, "pa"), await _client(gateway, b, "pb")
    try:
        for i in range(5):
            await pub_a.send(publish_packet(f"kp1/v1/app/{a}/r{i}", b"v%d" % i, retain=True, packet_id=i + 1))
            assert await pub_a.read_packet() == ack_packet(4, i + 1)
        assert gateway.broker is not None
        assert len(gateway.broker.router.retained) == 3  # r0..r2; r3, r4 refused
        # replacing one of its own topics is fine at the cap; clearing frees a slot
        await pub_a.send(publish_packet(f"kp1/v1/app/{a}/r0", b"new", retain=True, packet_id=10))
        await pub_a.send(publish_packet(f"kp1/v1/app/{a}/r1", b"", retain=True, packet_id=11))
        await pub_a.send(publish_packet(f"kp1/v1/app/{a}/r3", b"v3", retain=True, packet_id=12))
        for packet_id in (10, 11, 12):
            assert await pub_a.read_packet() == ack_packet(4, packet_id)
        # a payload over the device's byte budget is not retained (r0 keeps its message)
        await pub_a.send(publish_packet(f"kp1/v1/app/{a}/r0", b"x" * 20_000, retain=True, packet_id=13))
        assert await pub_a.read_packet() == ack_packet(4, 13)
        # device b: the node total (4) leaves it one
        for i in range(2):
            await pub_b.send(publish_packet(f"kp1/v1/app/{b}/r{i}", b"b", retain=True, packet_id=i + 1))
            assert await pub_b.read_packet() == ack_packet(4, i + 1)
        assert len(gateway.broker.router.retained) == 4
        sub = await _client(gateway, a, "sa")
        try:
            assert await _suback(sub, 1, [(f"kp1/v1/app/{a}/#", 0)]) == [0]
            got = {publish_fields(await sub.read_packet() or b"")[1:4:2] for _ in range(3)}
            assert got == {(f"kp1/v1/app/{a}/r0", b"new"), (f"kp1/v1/app/{a}/r2", b"v2"), (f"kp1/v1/app/{a}/r3", b"v3")}
            assert await sub.silent_for(0.3)
        finally:
            await sub.close()
    finally:
        await pub_a.close()
        await pub_b.close()
    limits = gateway.services.metrics.limits_hit
    assert limits["max_retained_per_device"] == 2
    assert limits["max_retained_bytes_per_device"] == 1
    assert limits["max_retained_messages"] == 1


# -- persistent sessions ---------------------------------------------------------------------------------------


@pytest.mark.gateway_settings(max_queued_messages=20)
async def test_an_offline_persistent_session_keeps_a_bounded_queue(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    topic = f"kp1/v1/app/{token}/later"
    kept = await _client(gateway, token, "kept", clean=False)
    assert await _suback(kept, 1, [(topic, 1)]) == [1]
    await kept.send(b"\xe0\x00")
    await kept.close()
    await wait_until(lambda: _offline(api))
    pub = await _client(gateway, token, "pub")
    try:
        for i in range(1, 31):  # 30 QoS 1 messages for an offline session that keeps 20
            await pub.send(publish_packet(topic, b"%d" % i, packet_id=i))
            assert await pub.read_packet() == ack_packet(4, i)
        await pub.send(publish_packet(topic, b"qos0 is not kept"))
    finally:
        await pub.close()
    assert await _resume(gateway, token, 20, then_silent=True) == [b"%d" % i for i in range(11, 31)]  # newest 20
    assert gateway.services.metrics.limits_hit["max_queued_messages"] == 10


async def _offline(api: httpx.AsyncClient) -> bool:
    return (await connection(api, "acme", "dev-1"))["connected"] is False


async def _kept_offline(gateway: Gateway) -> bool:
    """The persistent session `kept` of dev-1 is held, without a connection."""
    assert gateway.broker is not None
    delivery = gateway.broker.router.delivery_of("acme/dev-1/kept")
    return delivery is not None and not delivery.connected


async def test_unacknowledged_messages_are_sent_again_on_resume(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    topic = f"kp1/v1/app/{token}/again"
    kept = await _client(gateway, token, "kept", clean=False)
    assert await _suback(kept, 1, [(topic, 1)]) == [1]
    pub = await _client(gateway, token, "pub")
    try:
        await pub.send(publish_packet(topic, b"once", packet_id=1))
        assert await pub.read_packet() == ack_packet(4, 1)
        first = await kept.read_packet()
        assert first is not None and publish_fields(first)[3] == b"once"
    finally:
        await pub.close()
    await kept.close()  # gone without PUBACK
    assert await _resume(gateway, token, 1) == [b"once"]


async def test_metrics_report_the_limits(gateway: Gateway, api: httpx.AsyncClient) -> None:
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["limitsHit"] == {} and metrics["messagesDropped"] == 0


# -- found by attacking the first version of this layer -------------------------------------------------------


async def test_oversized_filters_are_refused_and_many_filters_in_one_packet_close(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """A filter is one trie node per level: a 64 KiB filter of '/' was 65,000 nodes (~26 MB)."""
    token = await make_device(api)
    raw = await _client(gateway, token, "deep")
    try:
        base = f"kp1/v1/app/{token}"
        assert await _suback(raw, 1, [(base + "/" * 60, 0), (base + "/" + "x" * 2000, 0), (base + "/ok", 0)]) == [
            0x80,
            0x80,
            0,
        ]
        await raw.send(subscribe_many(2, [(f"{base}/{i}", 0) for i in range(1001)]))
        assert await raw.closed_by_peer(2.0)
    finally:
        await raw.close()
    assert gateway.services.metrics.limits_hit["max_filter_size"] == 2


@pytest.mark.gateway_settings(max_inflight_messages=2)
async def test_nothing_is_lost_when_a_full_window_is_cut(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """A message taken off the queue while the in-flight window was full was in neither the queue nor
    the unacknowledged set when the connection ended: it was lost."""
    token = await make_device(api)
    topic = f"kp1/v1/app/{token}/w"
    kept = await _client(gateway, token, "kept", clean=False)
    assert await _suback(kept, 1, [(topic, 1)]) == [1]
    pub = await _client(gateway, token, "pub")
    try:
        for i in range(1, 6):
            await pub.send(publish_packet(topic, b"%d" % i, packet_id=i))
            assert await pub.read_packet() == ack_packet(4, i)
        first = [publish_fields(await kept.read_packet() or b"")[3] for _ in range(2)]
        assert first == [b"1", b"2"]  # the window is full; 3 waits for it
    finally:
        await pub.close()
    await kept.close()  # gone without acknowledging anything
    assert await _resume(gateway, token, 5) == [b"1", b"2", b"3", b"4", b"5"]


@pytest.mark.gateway_settings(max_queued_messages=20)
async def test_a_full_offline_queue_does_not_lock_its_session_out(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """Retained messages were replayed into the queue on every resume: with a full QoS 1 queue that
    closed the returning client as a slow consumer, every time."""
    token = await make_device(api)
    topic = f"kp1/v1/app/{token}/full"
    pub = await _client(gateway, token, "pub")
    await pub.send(publish_packet(topic, b"retained", retain=True, packet_id=1))
    assert await pub.read_packet() == ack_packet(4, 1)
    kept = await _client(gateway, token, "kept", clean=False)
    assert await _suback(kept, 1, [(topic, 1)]) == [1]
    _qos, _topic, packet_id, payload = publish_fields(await kept.read_packet() or b"")
    assert payload == b"retained"
    await kept.send(ack_packet(4, packet_id or 0))  # unacknowledged, it would be re-sent [MQTT-4.4.0-1]
    await kept.send(b"\xe0\x00")
    await kept.close()
    await wait_until(lambda: _kept_offline(gateway))
    try:
        for i in range(2, 22):
            await pub.send(publish_packet(topic, b"%d" % i, packet_id=i))
            assert await pub.read_packet() == ack_packet(4, i)
    finally:
        await pub.close()
    # all 20, no retained copy on top, and not closed
    assert await _resume(gateway, token, 20, then_silent=True) == [b"%d" % i for i in range(2, 22)]


@pytest.mark.gateway_settings(max_queued_bytes=4096)
async def test_queued_bytes_count_the_topic_too(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """A topic can be 65,535 bytes, more than most payloads: bounds on payload bytes alone held 58 MB."""
    token = await make_device(api)
    long_topic = f"kp1/v1/app/{token}/" + "t" * 900
    kept = await _client(gateway, token, "kept", clean=False)
    assert await _suback(kept, 1, [(long_topic, 1)]) == [1]
    await kept.send(b"\xe0\x00")
    await kept.close()
    await wait_until(lambda: _offline(api))
    pub = await _client(gateway, token, "pub")
    try:
        for i in range(1, 31):
            await pub.send(publish_packet(long_topic, b"x", packet_id=i))
            assert await pub.read_packet() == ack_packet(4, i)
    finally:
        await pub.close()
    assert gateway.broker is not None
    delivery = gateway.broker.router.delivery_of("acme/dev-1/kept")
    assert delivery is not None and delivery.queued_bytes <= 4096 and len(delivery) <= 4


@pytest.mark.gateway_settings(max_inflight_messages=1)
async def test_an_unacknowledged_message_is_kept_when_the_ack_never_comes(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """amqtt gives up on a PUBACK after 5 s; the message used to be dropped then. Now the connection
    is closed (slow_consumer) and the message stays for the persistent session."""
    token = await make_device(api)
    topic = f"kp1/v1/app/{token}/late"
    kept = await _client(gateway, token, "kept", clean=False)
    assert await _suback(kept, 1, [(topic, 1)]) == [1]
    pub = await _client(gateway, token, "pub")
    try:
        await pub.send(publish_packet(topic, b"B0", packet_id=1))
        assert await pub.read_packet() == ack_packet(4, 1)
    finally:
        await pub.close()
    first = await kept.read_packet()
    assert first is not None and publish_fields(first)[3] == b"B0"
    assert await kept.closed_by_peer(8.0)  # never acknowledged: closed after amqtt's 5 s
    await kept.close()
    assert await _resume(gateway, token, 1) == [b"B0"]
    log = (await connection(api, "acme", "dev-1"))["log"]
    assert any(e["reason"] == "slow_consumer" for e in log)
