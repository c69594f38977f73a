"""Workload 11 (issue 11 point 5): management API requests on one kept-alive connection.

Each request reads a tenant through the admin-token check, the router and the registry, one after
the other on a single HTTP/1.1 connection, as a script or the CLI would. Before the API's sockets set
TCP_NODELAY, each one after the first took ~42-47 ms (Nagle holding the body for a delayed ACK).
"""

from __future__ import annotations

import time
from typing import Any

import httpx


async def api_rate(info: dict[str, Any], seconds: float) -> float:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{info['api']}",
        headers={"Authorization": f"Bearer {info['admin']}"},
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    ) as api:
        (await api.get("/v1/tenants/bench")).raise_for_status()  # the connection is open and warm
        done = 0
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            (await api.get("/v1/tenants/bench")).raise_for_status()
            done += 1
    return done / seconds
