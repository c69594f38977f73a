"""Security issue, item 9: an acknowledged 10/EPMP request is durable, and a request the pending
limit refuses is answered 429 instead of vanishing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import make_device, ok, restarted_gateway, served_gateway, wait_until
from .wire import RawClient, ack_packet, connect_packet, publish_fields, publish_packet, subscribe_packet

ACCEPTED = b"\x20\x02\x00\x00"


async def test_every_acknowledged_request_survives_kill_9(tmp_path: Path) -> None:
    """QoS 1 writes are PUBACKed only after they commit: kill -9 right after a PUBACK loses none."""
    data_dir = tmp_path / "data"
    acked: list[int] = []
    async with served_gateway(data_dir, "durable-node") as served:
        async with served.api() as api:
            token = await make_device(api, app_version="v1")
        raw = await RawClient.open(served.ports["mqtt"])
        await raw.send(connect_packet("d", token))
        assert await raw.read_packet() == ACCEPTED
        topic = f"kp1/v1/epmx/{token}/update/keys"
        # 300 writes in flight at once; the gateway dies right after the 100th acknowledgement
        await raw.send(
            b"".join(publish_packet(topic, json.dumps({f"k{i}": i}).encode(), packet_id=i) for i in range(1, 301))
        )
        while len(acked) < 100:
            reply = await raw.read_packet(timeout=10)
            assert reply is not None and reply[0] == 0x40, reply
            acked.append(int.from_bytes(reply[2:4], "big"))
        await served.kill_9()
        await raw.close()
    async with restarted_gateway(data_dir, "durable-node") as gw:
        stored = await gw.registry.metadata.get("acme", "dev-1")
        lost = [i for i in acked if stored.get(f"k{i}") != i]
        assert lost == [], f"acknowledged but lost: {lost}"
        assert len(stored) >= len(acked)


@pytest.mark.gateway_settings(epmp_max_pending=1)
async def test_requests_over_the_pending_limit_are_answered_429(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api, app_version="v1")
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("d", token) + subscribe_packet(1, f"kp1/v1/epmx/{token}/#", qos=1))
        assert await raw.read_packet() == ACCEPTED
        assert await raw.read_packet() == b"\x90\x03\x00\x01\x01"
        base = f"kp1/v1/epmx/{token}/update/keys"
        await raw.send(b"".join(publish_packet(f"{base}/{i}", json.dumps({f"k{i}": i}).encode()) for i in range(1, 51)))
        answers: dict[int, tuple[str, bytes]] = {}
        while len(answers) < 50:
            reply = await raw.read_packet(timeout=5)
            assert reply is not None
            qos, topic, packet_id, payload = publish_fields(reply)
            if qos:
                await raw.send(ack_packet(4, packet_id or 0))
            request_id, outcome = topic.removeprefix(base + "/").split("/")
            assert int(request_id) not in answers, "one answer per request"
            answers[int(request_id)] = (outcome, payload)
        refused = {i for i, (outcome, _) in answers.items() if outcome == "error"}
        assert refused, "the flood went over the limit of 1 pending request"
        for i in refused:
            assert json.loads(answers[i][1]) == {
                "statusCode": 429,
                "reasonPhrase": "too many requests pending; retry later",
            }
        served = set(answers) - refused
        assert 1 in served and all(answers[i] == ("status", b"") for i in served)
        stored = await ok(api.get("/v1/tenants/acme/devices/dev-1/metadata"))
        assert set(stored) == {f"k{i}" for i in served}  # a refused request wrote nothing
        metrics = await ok(api.get("/v1/metrics"))
        assert metrics["epmpDropped"] == len(refused)
    finally:
        await raw.close()


@pytest.mark.gateway_settings(epmp_max_pending=2)
async def test_the_pending_limit_is_per_device_not_per_connection(
    gateway: Gateway, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device with many connections had `epmp_max_pending` per connection (2,480 pending, +271 MB)."""
    epmp = gateway.services.epmp
    assert epmp is not None
    gate = asyncio.Event()
    serve = epmp.handle

    async def gated(identity: Any, request: Any, payload: bytes) -> Any:
        await gate.wait()
        return await serve(identity, request, payload)

    monkeypatch.setattr(epmp, "handle", gated)
    token = await make_device(api, app_version="v1")
    base = f"kp1/v1/epmx/{token}/get"
    first, second = await RawClient.open(gateway.ports["mqtt"]), await RawClient.open(gateway.ports["mqtt"])
    try:
        for name, raw in (("a", first), ("b", second)):
            await raw.send(connect_packet(name, token) + subscribe_packet(1, f"kp1/v1/epmx/{token}/#"))
            assert await raw.read_packet() == ACCEPTED
            assert (await raw.read_packet() or b"")[0] == 0x90
        await first.send(publish_packet(f"{base}/1", b"") + publish_packet(f"{base}/2", b""))
        await wait_until(lambda: _pending(gateway, 2))
        await second.send(publish_packet(f"{base}/3", b""))  # the device already has 2 waiting
        replies = []
        for raw in (first, second):  # the 429 goes to every session of the device subscribed there
            reply = await raw.read_packet(timeout=5)
            assert reply is not None
            replies.append(publish_fields(reply)[1])
        assert replies == [f"{base}/3/error"] * 2
        gate.set()
        answered = {publish_fields(await first.read_packet(timeout=5) or b"")[1] for _ in range(2)}
        assert answered == {f"{base}/1/status", f"{base}/2/status"}
    finally:
        gate.set()
        await first.close()
        await second.close()
    assert (await ok(api.get("/v1/metrics")))["epmpDropped"] == 1


async def _pending(gateway: Gateway, n: int) -> bool:
    assert gateway.broker is not None
    return gateway.broker.epmp_pending("acme/dev-1") == n
