"""Builds the FastAPI application. Every /v1 route needs the admin bearer token; the dashboard at /ui/
(gateway/ui) a session opened with it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI
from fastapi.responses import PlainTextResponse

from .. import ui
from ..kp1.whitelist import WhitelistError
from ..prometheus import CONTENT_TYPE
from . import (
    audit,
    commands,
    credentials,
    data,
    devices,
    endpoint_filters,
    errors,
    groups,
    imports,
    metadata,
    service_accounts,
    tenants,
    trusted_cas,
)
from .audit import AuditTrail
from .deps import GatewayDep, require_admin
from .errors import BadRequest
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
    routers = (
        tenants.router,
        devices.router,
        credentials.router,
        credentials.tenant_tokens,
        trusted_cas.router,
        metadata.router,
        service_accounts.router,
        devices.rendezvous,
        commands.router,
        data.router,
        groups.router,
        imports.router,
        imports.template,
        endpoint_filters.router,
        audit.router,
    )
    for router in routers:
        app.include_router(router, dependencies=guard)

    metrics_guard = [] if gateway.settings.metrics_public else guard

    @app.get(
        "/metrics",
        dependencies=metrics_guard,
        tags=["operations"],
        response_class=PlainTextResponse,
        summary="Prometheus metrics",
    )
    async def prometheus_metrics(gw: GatewayDep) -> PlainTextResponse:
        """The counters of `/v1/metrics` and more (sessions by tenant, registry latency, event backlog,
        process) in the Prometheus text format; behind the admin token unless `metrics_public`."""
        return PlainTextResponse(await gw.prometheus.scrape(), media_type=CONTENT_TYPE)

    @app.get("/v1/metrics", dependencies=guard, tags=["operations"])
    async def metrics(gw: GatewayDep) -> dict[str, Any]:
        return {"node": gw.settings.node_id, **gw.services.metrics.snapshot()}

    @app.post("/v1/epmx/whitelist/reload", dependencies=guard, tags=["operations"])
    async def reload_whitelist(gw: GatewayDep) -> dict[str, Any]:
        """Re-read the EPMX whitelist file (as SIGHUP does); live sessions stay connected."""
        try:
            gw.reload_whitelist()
        except WhitelistError as exc:
            raise BadRequest(str(exc), status=422) from None
        assert gw.services.epmp is not None
        return {"appVersions": sorted(gw.services.epmp.whitelist.versions)}

    ui.install(app)

    @app.get("/healthz", tags=["operations"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(
        BodySizeLimit,
        max_bytes=gateway.settings.api_max_body_bytes,
        larger={imports.PATH_PATTERN: gateway.settings.import_max_bytes},
    )
    app.add_middleware(AuditTrail, gateway=gateway, admin_token=admin_token)  # outermost: sees every write
    return app
