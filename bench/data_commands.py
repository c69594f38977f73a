"""Workloads 8 and 9 (issue 9): device data to one application, and command round trips.

8. N devices publish one-sample 2/DCP messages (QoS 0) as fast as the server forwards them; one
   application receives them all: on the gateway a service account on `$gateway/data/<tenant>/+/dcx`
   (by device id, with the envelope), on amqtt and Mosquitto a plain subscriber on `kp1/v1/dcx/+/json`.
9. An application invokes a command on each of 10 devices, one outstanding per device; each device
   answers as soon as the command arrives. On the gateway that is 11/CEP (invocation over MQTT or REST,
   every command written to the registry); on amqtt and Mosquitto the same two publishes over plain
   topics, nothing kept.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from tests.wire import RawClient, connect_packet, publish_fields, publish_packet, subscribe_packet

from .fleet import STORM_CONCURRENCY

DATA_BACKLOG = 5_000  # the generator never runs further ahead of the application than this
SAMPLE = b'{"temperature":21.5,"humidity":40}'


def _count_packets(buffer: bytearray) -> int:
    """Whole MQTT packets at the front of `buffer`, which loses them (a partial one stays)."""
    count = pos = 0
    size = len(buffer)
    while pos < size:
        length, multiplier, i = 0, 1, pos + 1
        while i < size:
            byte = buffer[i]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            i += 1
            if not byte & 0x80:
                break
        else:
            break
        end = i + length
        if end > size:
            break
        pos = end
        count += 1
    del buffer[:pos]
    return count


async def _connect(port: int, client_id: str, username: str | None, password: str | None = None) -> RawClient:
    client = await RawClient.open(port)
    await client.send(connect_packet(client_id, username, password, keepalive=0))
    reply = await client.read_packet(timeout=30)
    if reply != b"\x20\x02\x00\x00":
        raise OSError(f"CONNECT refused: {reply!r}")
    return client


async def _subscribe(client: RawClient, topic_filter: str, qos: int = 0) -> None:
    await client.send(subscribe_packet(1, topic_filter, qos))
    suback = await client.read_packet(timeout=30)
    if suback is None or suback[-1] == 0x80:
        raise OSError(f"SUBSCRIBE {topic_filter!r} refused: {suback!r}")


async def _connect_many(port: int, tokens: list[str], prefix: str) -> list[RawClient]:
    """One connection per token, in the order of `tokens`."""
    clients: dict[int, RawClient] = {}
    queue = list(enumerate(tokens))

    async def worker() -> None:
        while queue:
            i, token = queue.pop()
            clients[i] = await _connect(port, f"{prefix}-{token}", token)

    await asyncio.gather(*(worker() for _ in range(min(STORM_CONCURRENCY, len(tokens)))))
    return [clients[i] for i in range(len(tokens))]


def _application(info: dict[str, Any]) -> tuple[str | None, str | None]:
    return info.get("app_user"), info.get("app_password")


async def data_rate(info: dict[str, Any], seconds: float, devices: int, *, gateway: bool) -> float:
    """Samples per second the application received, N devices publishing."""
    tokens: list[str] = info["fleet"][:devices]
    port = info["mqtt"]
    app = await _connect(port, "data-app", *_application(info))
    await _subscribe(app, "$gateway/data/bench/+/dcx" if gateway else "kp1/v1/dcx/+/json")
    clients = await _connect_many(port, tokens, "data")
    packets = [publish_packet(f"kp1/v1/dcx/{t}/json", SAMPLE) for t in tokens]
    received = sent = 0
    buffer = bytearray()

    async def receive() -> None:
        nonlocal received
        while data := await asyncio.wait_for(app.reader.read(1 << 16), 5.0):
            buffer.extend(data)
            received += _count_packets(buffer)

    reader = asyncio.create_task(receive())
    start = time.monotonic()
    stop = start + seconds
    i = 0
    try:
        while time.monotonic() < stop:
            for _ in range(50):  # round robin: every device sends at the same pace
                clients[i].writer.write(packets[i])
                i = (i + 1) % len(clients)
            sent += 50
            await asyncio.sleep(0)
            while time.monotonic() < stop and sent - received > DATA_BACKLOG:
                await asyncio.sleep(0.001)
        counted = received
        elapsed = time.monotonic() - start
    finally:
        reader.cancel()
        for client in [app, *clients]:
            client.writer.transport.abort()
    return counted / elapsed


async def command_trips(info: dict[str, Any], seconds: float, *, gateway: bool, rest: bool = False) -> float:
    """Command round trips per second, 10 devices, one command outstanding per device."""
    tokens: list[str] = info["fleet"][:10]  # on the gateway, fleet devices' ids equal their tokens
    port = info["mqtt"]
    devices = await _connect_many(port, tokens, "cmd")
    for token, device in zip(tokens, devices, strict=True):
        filter_ = f"kp1/v1/cex/{token}/command/ping/status" if gateway else f"cmd/{token}/ping"
        await _subscribe(device, filter_)
    answered: dict[str, asyncio.Queue[None]] = {t: asyncio.Queue() for t in tokens}
    stop = time.monotonic() + seconds
    done = 0

    async def answer(token: str, device: RawClient) -> None:
        """The device: every command that arrives is answered at once."""
        while (packet := await device.read_packet(timeout=30)) is not None:
            if packet[0] & 0xF0 != 0x30:
                continue
            _qos, _topic, _pid, payload = publish_fields(packet)
            if gateway:
                ids = [c["id"] for c in json.loads(payload)]
                result = json.dumps([{"id": i, "statusCode": 200} for i in ids]).encode()
                await device.send(publish_packet(f"kp1/v1/cex/{token}/result/ping", result))
            else:
                await device.send(publish_packet(f"cmd/{token}/ping/result", payload))

    answering = [asyncio.create_task(answer(t, d)) for t, d in zip(tokens, devices, strict=True)]
    app: RawClient | None = None
    try:
        if rest:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{info['api']}", headers={"Authorization": f"Bearer {info['admin']}"}
            ) as http:

                async def invoke_rest(token: str) -> None:
                    nonlocal done
                    url = f"/v1/tenants/bench/devices/{token}/commands/ping"
                    while time.monotonic() < stop:
                        r = await http.post(url, json={"payload": 1, "timeoutMs": 10_000})
                        if r.status_code != 200:
                            raise OSError(f"command failed: {r.status_code} {r.text}")
                        done += 1

                await asyncio.gather(*(invoke_rest(t) for t in tokens))
        else:
            app = await _connect(port, "cmd-app", *_application(info))
            await _subscribe(app, "$gateway/commands/bench/+/ping/result" if gateway else "cmd/+/ping/result")

            async def results() -> None:
                assert app is not None
                while (packet := await app.read_packet(timeout=30)) is not None:
                    if packet[0] & 0xF0 == 0x30:
                        topic = publish_fields(packet)[1]
                        answered[topic.split("/")[3] if gateway else topic.split("/")[1]].put_nowait(None)

            reading = asyncio.create_task(results())

            async def invoke_mqtt(token: str) -> None:
                nonlocal done
                topic = f"$gateway/commands/bench/{token}/ping" if gateway else f"cmd/{token}/ping"
                body = b'{"payload":1,"timeoutMs":10000}'
                while time.monotonic() < stop:
                    await app.send(publish_packet(topic, body))
                    await asyncio.wait_for(answered[token].get(), 15)
                    done += 1

            try:
                await asyncio.gather(*(invoke_mqtt(t) for t in tokens))
            finally:
                reading.cancel()
    finally:
        for task in answering:
            task.cancel()
        for client in [*devices, *([app] if app else [])]:
            client.writer.transport.abort()
    return done / seconds
