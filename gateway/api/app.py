"""Builds the FastAPI application. Every /v1 route needs the admin bearer token."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI

from . import credentials, devices, errors, tenants, trusted_cas
from .deps import GatewayDep, require_admin
from .limits import BodySizeLimit

if TYPE_CHECKING:
    from ..runtime import Gateway


def create_app(gateway: Gateway, admin_token: str) -> FastAPI:
    app = FastAPI(
        title="mqtt-gateway management API",
        version="1",
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gateway
    app.state.admin_token = admin_token
    errors.install(app)
    guard = [Depends(require_admin)]
    routers = (tenants.router, devices.router, credentials.router, credentials.tenant_tokens, trusted_cas.router)
    for router in routers:
        app.include_router(router, dependencies=guard)

    @app.get("/v1/metrics", dependencies=guard, tags=["operations"])
    async def metrics(gw: GatewayDep) -> dict[str, Any]:
        return {"node": gw.settings.node_id, **gw.services.metrics.snapshot()}

    @app.get("/healthz", tags=["operations"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(BodySizeLimit, max_bytes=gateway.settings.api_max_body_bytes)
    return app
