"""Start-up and shutdown of a real `mqtt-gateway serve` process, concurrent CONNECTs, IPv6 loopback."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import (
    admin_http,
    api_client,
    connection,
    make_device,
    ok,
    served_ports,
    spawn_gateway,
    test_settings,
    wait_until,
)
from .wire import RawClient, connect_packet, publish_packet, subscribe_packet


async def test_concurrent_connects_with_one_client_id_leave_exactly_one(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    token = await make_device(api)

    async def attempt() -> RawClient:
        raw = await RawClient.open(gateway.ports["mqtt"])
        await raw.send(connect_packet("same", token))
        return raw

    clients = await asyncio.gather(*(attempt() for _ in range(20)))
    replies = await asyncio.gather(*(c.read_packet() for c in clients))
    assert all(r in (b"\x20\x02\x00\x00", None) for r in replies), replies
    await wait_until(lambda: _sessions_are(api, 1))
    still_open = [c for c in clients if not await c.closed_by_peer(0.3)]
    assert len(still_open) == 1
    status = await connection(api, "acme", "dev-1")
    taken_over = [e for e in status["log"] if e["reason"] == "session_taken_over"]
    assert len(taken_over) == sum(1 for r in replies if r is not None) - 1
    for c in clients:
        await c.close()


async def _sessions_are(api: httpx.AsyncClient, n: int) -> bool:
    return (await connection(api, "acme", "dev-1"))["sessions"] == n


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_shuts_down_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    data_dir = tmp_path / "data"
    proc = spawn_gateway(data_dir, "proc-node")
    try:
        ports = await served_ports(data_dir, proc)
        admin = (data_dir / "admin-token").read_text().strip()
        assert oct((data_dir / "admin-token").stat().st_mode & 0o777) == "0o600"
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{ports['api']}", headers={"Authorization": f"Bearer {admin}"}
        ) as api:
            token = await make_device(api)
        raw = await RawClient.open(ports["mqtt"])
        await raw.send(connect_packet("c", token))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        proc.send_signal(sig)
        assert await raw.closed_by_peer(5.0)
        await raw.close()
        assert await asyncio.to_thread(proc.wait, 10) == 0
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        assert "Traceback" not in stderr and "Admin token (shown once" in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
    # the admin token is printed once only: a restart reuses it silently
    gw = Gateway(test_settings(data_dir, node_id="proc-node"))
    await gw.start()
    try:
        assert gw.admin_token == admin and not gw.admin_token_created
        async with api_client(gw) as api:
            status = await connection(api, "acme", "dev-1")
        assert status["connected"] is False and status["log"][0]["reason"] == "gateway_shutdown"
    finally:
        await gw.stop()


async def test_tls_material_is_reused_across_restarts(tmp_path: Path) -> None:
    gw = Gateway(test_settings(tmp_path))
    await gw.start()
    assert gw.tls is not None
    ca, server = gw.tls.ca_path.read_bytes(), gw.tls.cert_path.read_bytes()
    assert oct(gw.tls.key_path.stat().st_mode & 0o777) == "0o600"
    await gw.stop()
    gw = Gateway(test_settings(tmp_path))
    await gw.start()
    try:
        assert gw.tls is not None
        assert gw.tls.ca_path.read_bytes() == ca and gw.tls.cert_path.read_bytes() == server
    finally:
        await gw.stop()


async def test_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        r = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--data-dir",
                str(tmp_path),
                "--mqtt-port",
                "0",
                "--mqtts-port",
                "0",
                "--api-port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 1
        assert r.stderr.strip().splitlines()[-1].startswith("mqtt-gateway: cannot bind the API")
        assert "Traceback" not in r.stderr
    finally:
        busy.close()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def test_ipv6_loopback(tmp_path: Path) -> None:
    if not _has_ipv6_loopback():
        pytest.fail("this machine has no ::1; the gateway's IPv6 support cannot be checked here")
    gw = Gateway(test_settings(tmp_path, host="::1"))
    await gw.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://[::1]:{gw.ports['api']}", headers={"Authorization": f"Bearer {gw.admin_token}"}
        ) as api:
            token = await make_device(api)
            assert (await ok(api.get("/v1/tenants")))[0]["id"] == "acme"
        import aiomqtt

        async with aiomqtt.Client("::1", gw.ports["mqtt"], username=token) as client:
            await client.subscribe(f"kp1/v1/app/{token}/#")
    finally:
        await gw.stop()


async def test_sighup_reloads_the_whitelist_without_dropping_sessions(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    whitelist = tmp_path / "whitelist.yaml"
    whitelist.write_text("applications:\n  app:\n    versions:\n      v1: {}\n")
    proc = spawn_gateway(data_dir, "hup", GATEWAY_EPMX_WHITELIST=str(whitelist))
    try:
        ports = await served_ports(data_dir, proc)
        async with admin_http(data_dir, ports) as api:
            token = await make_device(api, "acme", "d1", app_version="v1")
        raw = await RawClient.open(ports["mqtt"])
        await raw.send(connect_packet("c", token) + subscribe_packet(1, f"kp1/v1/epmx/{token}/#"))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        assert (await raw.read_packet() or b"")[0] == 0x90
        await raw.send(publish_packet(f"kp1/v1/epmx/{token}/update/keys/1", b'{"x": 1}'))
        assert (await raw.read_packet() or b"").endswith(b"/update/keys/1/status")
        whitelist.write_text(
            "applications:\n  app:\n    versions:\n      v1:\n        metadata-keys:\n          y: {}\n"
        )
        proc.send_signal(signal.SIGHUP)
        for request_id in range(2, 200):  # the signal is handled asynchronously: ask until it took effect
            await raw.send(publish_packet(f"kp1/v1/epmx/{token}/update/keys/{request_id}", b'{"x": 2}'))
            reply = await raw.read_packet()
            assert reply is not None
            if b"/error" in reply:
                break
        assert b'"statusCode":403' in reply  # x is no longer in the whitelist: refused, not written
        await raw.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
        assert "EPMX whitelist reloaded" in (proc.stderr.read().decode() if proc.stderr else "")
    finally:
        if proc.poll() is None:
            proc.kill()
