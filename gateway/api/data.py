"""/v1/tenants/{tenant}/devices/{device}/data: what the device last sent (2/DCP), from memory."""

from __future__ import annotations

import json

from fastapi import APIRouter

from registry.errors import NotFound
from registry.models import from_ms

from .deps import GatewayDep
from .schemas.data import LastDataOut

router = APIRouter(prefix="/v1/tenants/{tenant}/devices/{device}/data", tags=["data"])


@router.get("/last", summary="Get a device's last data sample")
async def last_data(tenant: str, device: str, gw: GatewayDep) -> LastDataOut:
    """The last sample of the device's last data message, when it arrived, and how many messages and
    samples this node has taken from it. Kept in memory (not in the registry): 404 after a restart
    until the device sends again."""
    await gw.registry.devices.get(tenant, device)
    data = gw.services.data
    last = data.last(tenant, device) if data is not None else None
    if last is None:
        raise NotFound(f"no data from device {device!r} on this node yet", field="device")
    return LastDataOut(
        endpoint_id=device,
        app_version_name=last.app_version,
        received_at=from_ms(last.received_at),
        received_at_ms=last.received_at,
        sample=json.loads(last.sample),
        messages=last.messages,
        samples=last.samples,
    )
