"""A real gateway on ephemeral loopback ports, a real HTTP client, real MQTT clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from gateway.node.runtime import Gateway
from gateway.node.settings import GatewaySettings


def test_settings(data_dir: Path, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "mqtt_port": 0,
        "mqtts_port": 0,
        "api_port": 0,
        "node_id": "test-node",
        "connect_timeout": 1.0,
    }
    values.update(overrides)
    return GatewaySettings(**values)


test_settings.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture
async def gateway(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    """`@pytest.mark.gateway_settings(name=value, ...)` on a test changes settings of its gateway."""
    marker = request.node.get_closest_marker("gateway_settings")
    gw = Gateway(test_settings(tmp_path / "data", **(marker.kwargs if marker else {})))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


@pytest.fixture
async def api(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(gateway) as client:
        yield client


def api_client(gateway: Gateway, token: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{gateway.ports['api']}",
        headers={"Authorization": f"Bearer {token or gateway.admin_token}"},
        timeout=10,
    )


async def ok(response: Awaitable[httpx.Response], status: int = 200) -> Any:
    r = await response
    assert r.status_code == status, r.text
    return r.json() if r.content else None


async def make_device(
    api: httpx.AsyncClient,
    tenant: str = "acme",
    device: str = "dev-1",
    app_version: str = "v1",
    token: str | None = None,
) -> str:
    """Creates the tenant (if needed) and device, issues a token and returns it."""
    r = await api.post("/v1/tenants", json={"id": tenant})
    assert r.status_code in (201, 409), r.text
    await ok(api.post(f"/v1/tenants/{tenant}/devices", json={"id": device, "appVersion": app_version}), 201)
    body = {"token": token} if token else None
    issued = await ok(api.post(f"/v1/tenants/{tenant}/devices/{device}/tokens", json=body), 201)
    return str(issued["token"])


def client_tls_context(gateway: Gateway) -> ssl.SSLContext:
    assert gateway.tls is not None
    return ssl.create_default_context(cafile=str(gateway.tls.ca_path))


def mqtt(
    gateway: Gateway,
    username: str | None,
    password: str | None = None,
    *,
    client_id: str = "",
    tls: bool = False,
    **kwargs: Any,
) -> aiomqtt.Client:
    return aiomqtt.Client(
        "localhost" if tls else "127.0.0.1",
        gateway.ports["mqtts" if tls else "mqtt"],
        username=username,
        password=password,
        identifier=client_id or None,
        tls_context=client_tls_context(gateway) if tls else None,
        timeout=5,
        **kwargs,
    )


async def connect_refused(gateway: Gateway, username: str | None, password: str | None = None) -> int:
    """Returns the CONNACK return code of a refused CONNECT (fails the test if it is accepted)."""
    try:
        async with mqtt(gateway, username, password):
            pass
    except aiomqtt.MqttCodeError as exc:
        return int(exc.rc) if isinstance(exc.rc, int) else int(exc.rc.value)  # type: ignore[union-attr]
    raise AssertionError("CONNECT was accepted")


async def next_message(client: aiomqtt.Client, timeout: float = 2.0) -> aiomqtt.Message | None:
    async def first() -> aiomqtt.Message:
        async for message in client.messages:
            return message
        raise AssertionError("message stream ended")

    try:
        return await asyncio.wait_for(first(), timeout)
    except TimeoutError:
        return None


async def next_json(client: aiomqtt.Client, timeout: float = 3.0) -> tuple[str, Any]:
    """(topic, JSON payload or None when empty) of the next message; fails the test if none comes."""
    message = await next_message(client, timeout)
    assert message is not None, "nothing arrived"
    raw = bytes(message.payload)  # type: ignore[arg-type]
    return str(message.topic), json.loads(raw) if raw else None


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 3.0) -> float:
    """Polls until predicate() is true; returns the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await predicate():
        if loop.time() - start > timeout:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
    return loop.time() - start


async def connection(api: httpx.AsyncClient, tenant: str, device: str) -> dict[str, Any]:
    return await ok(api.get(f"/v1/tenants/{tenant}/devices/{device}/connection"))  # type: ignore[no-any-return]


async def outbox_events(gateway: Gateway, tenant: str, subject: str | None = None) -> list[dict[str, Any]]:
    """The tenant's events in the outbox, optionally only those with this subject."""
    return [
        {"id": e.id, "subject": e.subject, "payload": e.payload}
        for e in await gateway.registry.outbox.of_tenant(tenant)
        if subject is None or e.subject == subject
    ]


def spawn_gateway(data_dir: Path, node_id: str, **env: str) -> subprocess.Popen[bytes]:
    """`mqtt-gateway serve` as a real process on ephemeral ports (for signals and kill -9)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--data-dir",
            str(data_dir),
            "--mqtt-port",
            "0",
            "--mqtts-port",
            "0",
            "--api-port",
            "0",
        ],
        env={**os.environ, "GATEWAY_NODE_ID": node_id, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def served_ports(data_dir: Path, proc: subprocess.Popen[bytes]) -> dict[str, int]:
    """Waits for the spawned gateway's ports.json."""
    for _ in range(400):
        if (data_dir / "ports.json").exists():
            return json.loads((data_dir / "ports.json").read_text())  # type: ignore[no-any-return]
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        await asyncio.sleep(0.05)
    raise AssertionError("gateway did not start")


def admin_http(data_dir: Path, ports: dict[str, int]) -> httpx.AsyncClient:
    admin = (data_dir / "admin-token").read_text().strip()
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['api']}", headers={"Authorization": f"Bearer {admin}"})


# -- a gateway process that is killed with SIGKILL, and its restart: the flow every crash test shares ----------


@dataclass
class ServedGateway:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    ports: dict[str, int]

    def api(self) -> httpx.AsyncClient:
        return admin_http(self.data_dir, self.ports)

    async def kill_9(self) -> None:
        """SIGKILL, reaped; its ports.json is removed (a restart writes its own)."""
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait, 10)
        (self.data_dir / "ports.json").unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def served_gateway(data_dir: Path, node_id: str, **env: str) -> AsyncIterator[ServedGateway]:
    """`mqtt-gateway serve` as a real process until the block ends; killed and reaped whatever happens."""
    proc = spawn_gateway(data_dir, node_id, **env)
    try:
        yield ServedGateway(proc, data_dir, await served_ports(data_dir, proc))
    finally:
        if proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)


@contextlib.asynccontextmanager
async def restarted_gateway(data_dir: Path, node_id: str) -> AsyncIterator[Gateway]:
    """The same data directory and node id, in this process: what the crashed one left behind."""
    gw = Gateway(test_settings(data_dir, node_id=node_id))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()
