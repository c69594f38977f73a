"""Regressions found by attacking the gateway's own session layer (gateway/mqtt/): in-flight messages
bounded however often the link drops, no will after DISCONNECT, no stray warnings for an ordinary
PUBACK + DISCONNECT, and a registry failure at CONNECT that keeps the persistent session."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import httpx
import pytest

from gateway.mqtt import qos
from gateway.mqtt.delivery import Delivery, DeliveryLimits
from gateway.mqtt.qos import Outgoing
from gateway.node.runtime import Gateway

from .conftest import make_device
from .wire import RawClient, ack_packet, connect_packet, publish_fields, publish_packet, subscribe_packet

ACCEPTED = b"\x20\x02\x00\x00"


class _Metrics:
    def __init__(self) -> None:
        self.limits_hit: Counter[str] = Counter()
        self.messages_dropped = 0


class _Link:
    """A connection whose client never acknowledges; closing it makes every write fail, as a real one."""

    def __init__(self) -> None:
        self.closing = False

    def write(self, data: bytes) -> None:
        if self.closing:
            raise ConnectionResetError("closed")

    async def drain(self) -> None:
        await asyncio.sleep(0)


async def test_in_flight_messages_stay_within_the_window_however_often_the_link_drops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sender that went on after its link closed moved the whole queue, and all new traffic, into the
    in-flight set, which no bound covered: 300 more per reconnect, up to 65,535 packet ids."""
    monkeypatch.setattr(qos, "ACK_TIMEOUT", 0.05)
    delivery = Delivery(DeliveryLimits(100, 8_000_000, 8), _Metrics(), persistent=True, on_slow=lambda: None)  # type: ignore[arg-type]
    for _cycle in range(5):
        link = _Link()
        delivery.attach(link, lambda link=link: setattr(link, "closing", True))  # type: ignore[misc]
        for _ in range(300):  # traffic while connected; the client never acknowledges
            delivery.offer(Outgoing("a/b", b"x" * 10, 1))
            await asyncio.sleep(0.001)
        while not link.closing:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        delivery.detach_from(link)
        assert len(delivery.flows) <= 8
        assert len(delivery) <= 100


async def test_an_acknowledged_message_then_disconnect_logs_nothing(
    gateway: Gateway, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """PUBACK and DISCONNECT in one read: the clean session's flows were discarded before the ack task
    resumed, which then failed on its own bookkeeping (a KeyError warning per disconnect)."""
    token = await make_device(api)
    topic = f"kp1/v1/app/{token}/t"
    for i in range(5):
        sub = await RawClient.open(gateway.ports["mqtt"])
        await sub.send(connect_packet(f"s{i}", token) + subscribe_packet(1, topic, qos=1))
        assert await sub.read_packet() == ACCEPTED
        assert (await sub.read_packet() or b"")[0] == 0x90
        pub = await RawClient.open(gateway.ports["mqtt"])
        await pub.send(connect_packet(f"p{i}", token) + publish_packet(topic, b"m", packet_id=1, qos=1))
        assert await pub.read_packet() == ACCEPTED
        message = await sub.read_packet()
        assert message is not None
        with caplog.at_level(logging.WARNING, logger="gateway"):
            await sub.send(ack_packet(4, publish_fields(message)[2] or 0) + b"\xe0\x00")
            assert await sub.closed_by_peer(2.0)
        await sub.close()
        await pub.close()
    await asyncio.sleep(0.1)
    assert [r.getMessage() for r in caplog.records if "failed" in r.getMessage()] == []


async def test_no_will_after_disconnect_even_when_taken_over_while_finishing(
    gateway: Gateway, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The will was suppressed only when the close reason was `client_disconnect`; a takeover while
    the reader finished a request read before DISCONNECT replaced that reason, and the will went out."""
    token = await make_device(api, app_version="v1")
    will_topic = f"kp1/v1/app/{token}/will"
    assert gateway.services.epmp is not None
    epmp = gateway.services.epmp
    handle, started, release = epmp.handle, asyncio.Event(), asyncio.Event()

    async def gated(*args: object) -> object:  # the 10/EPMP request in progress when DISCONNECT arrives
        started.set()
        await release.wait()
        return await handle(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(epmp, "handle", gated)
    watcher = await RawClient.open(gateway.ports["mqtt"])
    await watcher.send(connect_packet("watcher", token) + subscribe_packet(1, will_topic))
    assert await watcher.read_packet() == ACCEPTED
    assert (await watcher.read_packet() or b"")[0] == 0x90
    first = await RawClient.open(gateway.ports["mqtt"])
    await first.send(connect_packet("x", token, will=(will_topic, b"gone")))
    assert await first.read_packet() == ACCEPTED
    request = publish_packet(f"kp1/v1/epmx/{token}/update/keys", b'{"k": 1}', packet_id=1)
    await first.send(request + b"\xe0\x00")
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.sleep(0.1)  # DISCONNECT read: the reader now waits for the request
    second = await RawClient.open(gateway.ports["mqtt"])
    await second.send(connect_packet("x", token))  # takes the session over while the first finishes
    await asyncio.sleep(0.2)
    release.set()
    assert await second.read_packet(timeout=10) == ACCEPTED
    assert await watcher.silent_for(1.0), "the will was published"
    for client in (first, second, watcher):
        await client.close()


async def test_a_registry_failure_at_connect_is_retry_later_and_keeps_the_session(
    gateway: Gateway, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry error while recording the CONNECT gave CONNACK 5 (final, to many clients) and threw
    the persistent session away with its queue. Now: CONNACK 3, and the session stays."""
    token = await make_device(api)
    topic = f"kp1/v1/app/{token}/q"
    kept = await RawClient.open(gateway.ports["mqtt"])
    await kept.send(connect_packet("kept", token, clean=False) + subscribe_packet(1, topic, qos=1))
    assert await kept.read_packet() == ACCEPTED
    assert (await kept.read_packet() or b"")[0] == 0x90
    await kept.send(b"\xe0\x00")
    await kept.close()
    assert gateway.broker is not None
    broker = gateway.broker

    async def offline() -> bool:
        return "acme/dev-1/kept" in broker.sessions and not broker.sessions["acme/dev-1/kept"].connected

    for _ in range(100):
        if await offline():
            break
        await asyncio.sleep(0.02)
    pub = await RawClient.open(gateway.ports["mqtt"])
    await pub.send(connect_packet("pub", token) + publish_packet(topic, b"queued", packet_id=1, qos=1))
    assert await pub.read_packet() == ACCEPTED
    assert await pub.read_packet() == ack_packet(4, 1)
    await pub.close()

    async def failing(**_: object) -> bool:
        raise OSError("disk I/O error")

    monkeypatch.setattr(gateway.registry.connections, "record_connect", failing)
    back = await RawClient.open(gateway.ports["mqtt"])
    await back.send(connect_packet("kept", token, clean=False))
    assert await back.read_packet() == b"\x20\x02\x00\x03"  # server unavailable: come back later
    await back.close()
    monkeypatch.undo()
    back = await RawClient.open(gateway.ports["mqtt"])
    await back.send(connect_packet("kept", token, clean=False))
    assert await back.read_packet() == b"\x20\x02\x01\x00"  # the session is still there
    message = await back.read_packet()
    assert message is not None and publish_fields(message)[3] == b"queued"
    await back.close()


async def test_a_late_end_of_a_taken_over_connection_does_not_close_its_successor(
    gateway: Gateway, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A takeover gives the old connection TAKEOVER_WAIT to record its end, then binds the new one. An
    end recorded later closed the registry row of the session key, which was by then the new one's:
    the device showed as not connected while it was."""
    from gateway.mqtt import table

    monkeypatch.setattr(table, "TAKEOVER_WAIT", 0.2)
    token = await make_device(api)
    connections = gateway.registry.connections
    record_disconnect = connections.record_disconnect

    async def slow(**kwargs: object) -> None:  # the old connection's end, recorded after the takeover
        await asyncio.sleep(0.6)
        await record_disconnect(**kwargs)  # type: ignore[arg-type]

    first = await RawClient.open(gateway.ports["mqtt"])
    await first.send(connect_packet("x", token))
    assert await first.read_packet() == ACCEPTED
    monkeypatch.setattr(connections, "record_disconnect", slow)
    second = await RawClient.open(gateway.ports["mqtt"])
    await second.send(connect_packet("x", token))
    assert await second.read_packet(timeout=5) == ACCEPTED
    await asyncio.sleep(1.0)  # the first connection's end is written by now
    status = (await api.get("/v1/tenants/acme/devices/dev-1/connection")).json()
    assert status["connected"] is True, status
    await first.close()
    await second.close()


async def test_overlapping_filters_deliver_one_copy(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """Each matching filter got its own copy: 100 overlapping filters turned one publish into 100
    deliveries to one session, and a flood of them stalled every other client for seconds."""
    token = await make_device(api)
    base = f"kp1/v1/app/{token}"
    sub = await RawClient.open(gateway.ports["mqtt"])
    filters = [f"{base}/a/b", f"{base}/+/b", f"{base}/a/+", f"{base}/#", f"{base}/+/#"]
    await sub.send(
        connect_packet("s", token) + b"".join(subscribe_packet(i + 1, f, qos=i % 2) for i, f in enumerate(filters))
    )
    assert await sub.read_packet() == ACCEPTED
    for _ in filters:
        assert (await sub.read_packet() or b"")[0] == 0x90
    pub = await RawClient.open(gateway.ports["mqtt"])
    await pub.send(connect_packet("p", token) + publish_packet(f"{base}/a/b", b"once", packet_id=1, qos=1))
    assert await pub.read_packet() == ACCEPTED
    message = await sub.read_packet()
    assert message is not None and publish_fields(message)[0] == 1  # the highest QoS granted
    await sub.send(ack_packet(4, publish_fields(message)[2] or 0))
    assert await sub.silent_for(0.5)
    await sub.close()
    await pub.close()


async def test_epmp_counters_do_not_grow_with_the_paths_devices_invent(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """The 10/EPMP request counter was keyed by the client's own resource path: 3,000 unknown
    60 KB paths held 180 MB and made GET /v1/metrics 180 MB long."""
    token = await make_device(api, app_version="v1")
    raw = await RawClient.open(gateway.ports["mqtt"])
    await raw.send(connect_packet("d", token))
    assert await raw.read_packet() == ACCEPTED
    await raw.send(b"".join(publish_packet(f"kp1/v1/epmx/{token}/x{i}-{'z' * 1000}", b"{}") for i in range(200)))
    await raw.send(publish_packet(f"kp1/v1/epmx/{token}/get/1", b"{}", packet_id=1, qos=1))
    while (reply := await raw.read_packet(timeout=5)) is not None and reply[0] != 0x40:
        pass
    await raw.close()
    counters = (await api.get("/v1/metrics")).json()["epmpRequests"]
    assert set(counters) <= {"/get", "(unknown)"} and counters.get("(unknown)") == 200, counters


async def test_a_denied_publish_to_a_huge_topic_logs_a_short_line(
    gateway: Gateway, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A 60 KB topic became a 60 KB WARNING line, one per publish: the log was the amplifier."""
    token = await make_device(api)
    raw = await RawClient.open(gateway.ports["mqtt"])
    await raw.send(connect_packet("d", token))
    assert await raw.read_packet() == ACCEPTED
    with caplog.at_level(logging.WARNING, logger="gateway.audit"):
        await raw.send(publish_packet("kp1/v1/app/someone-else/" + "t" * 60_000, b"x", packet_id=1, qos=1))
        assert await raw.read_packet() == ack_packet(4, 1)  # acknowledged, not delivered
    await raw.close()
    denied = [r.getMessage() for r in caplog.records if "publish_denied" in r.getMessage()]
    assert len(denied) == 1 and len(denied[0]) < 1000, [len(d) for d in denied]


@pytest.mark.gateway_settings(max_pending_connects_per_address=3, max_sessions_per_device=1)
async def test_connects_queued_behind_a_device_cap_count_as_pending(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """A socket stopped counting as pending once its CONNECT was read, while CONNECTs of one device
    queue one at a time behind its session cap (1 s each): one token held every socket slot."""
    token = await make_device(api)
    held = await RawClient.open(gateway.ports["mqtt"])
    await held.send(connect_packet("held", token))
    assert await held.read_packet() == ACCEPTED
    queued = []
    for i in range(3):
        raw = await RawClient.open(gateway.ports["mqtt"])
        await raw.send(connect_packet(f"q{i}", token))
        queued.append(raw)
    await asyncio.sleep(0.2)
    fourth = await RawClient.open(gateway.ports["mqtt"])
    assert await fourth.closed_by_peer(1.0)  # refused at accept: its address has 3 sockets pending
    assert gateway.services.metrics.limits_hit["max_pending_connects_per_address"] >= 1
    for raw in [*queued, fourth, held]:
        await raw.close()


async def test_a_resent_qos2_request_is_acknowledged_only_once_the_original_commits(
    gateway: Gateway, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DUP of a QoS 2 10/EPMP request got PUBREC at once (its id was already awaiting PUBREL),
    before the original's write had committed: a crash then would lose an acknowledged write."""
    token = await make_device(api, app_version="v1")
    assert gateway.services.epmp is not None
    epmp = gateway.services.epmp
    handle, started, release = epmp.handle, asyncio.Event(), asyncio.Event()

    async def gated(*args: object) -> object:  # the original request, not yet committed
        started.set()
        await release.wait()
        return await handle(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(epmp, "handle", gated)
    request = publish_packet(f"kp1/v1/epmx/{token}/update/keys", b'{"k": 1}', packet_id=7, qos=2)
    first = await RawClient.open(gateway.ports["mqtt"])
    await first.send(connect_packet("p", token, clean=False) + request)
    assert await first.read_packet() == ACCEPTED
    await asyncio.wait_for(started.wait(), 5)
    second = await RawClient.open(gateway.ports["mqtt"])  # the link dropped; the client resends with DUP
    await second.send(connect_packet("p", token, clean=False))
    assert await second.read_packet(timeout=10) == b"\x20\x02\x01\x00"
    await second.send(publish_packet(f"kp1/v1/epmx/{token}/update/keys", b'{"k": 1}', packet_id=7, qos=2, dup=True))
    assert await second.silent_for(0.5), "PUBREC before the write committed"
    release.set()
    assert await second.read_packet(timeout=5) == ack_packet(5, 7)  # PUBREC, now that it is durable
    assert (await gateway.registry.metadata.get("acme", "dev-1")) == {"k": 1}
    for client in (first, second):
        await client.close()
