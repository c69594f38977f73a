"""Builds the FastAPI application. Every /v1 route needs the admin bearer token; the docs need it
too unless `api_docs_public` (gateway/api/docs.py); the dashboard at /ui/ (gateway/ui) a session
opened with it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI
from fastapi.responses import PlainTextResponse

from .. import ui
from ..kp1.whitelist import WhitelistError
from ..ops.prometheus import CONTENT_TYPE
from ..ui import admin_login
from . import (
    audit,
    commands,
    credentials,
    data,
    devices,
    docs,
    endpoint_filters,
    errors,
    groups,
    imports,
    metadata,
    service_accounts,
    tenants,
    trusted_cas,
)
from .audit_trail import AuditTrail
from .deps import GatewayDep, require_admin
from .errors import BadRequest
from .limits import BodySizeLimit, UnauthenticatedLimit

if TYPE_CHECKING:
    from ..node.runtime import Gateway

DESCRIPTION = """Tenants, devices and their credentials, trusted CAs, metadata, commands, groups and their
policies, device imports and endpoint filters of one gateway node.

Every `/v1` call needs `Authorization: Bearer <admin token>`, the token in `<data-dir>/admin-token`:
give it to **Authorize** before **Try it out**. Errors are `{"error", "message", "field"}`.
The gateway's `docs/api.md` has the rest."""


def create_app(gateway: Gateway, admin_token: str) -> FastAPI:
    app = FastAPI(
        title="mqtt-gateway management API",
        version="1",
        description=DESCRIPTION,
        openapi_url=None,  # gateway/api/docs.py serves it, behind the token
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

    @app.get("/v1/metrics", dependencies=guard, tags=["operations"], summary="Read this node's counters")
    async def metrics(gw: GatewayDep) -> dict[str, Any]:
        """Counters since start: CONNECTs accepted and refused by reason, disconnects by reason, denied
        publishes and subscriptions, kicked sessions, 10/EPMP requests, data messages, commands."""
        return {"node": gw.settings.node_id, **gw.services.metrics.snapshot()}

    @app.post(
        "/v1/epmx/whitelist/reload", dependencies=guard, tags=["operations"], summary="Re-read the EPMX whitelist"
    )
    async def reload_whitelist(gw: GatewayDep) -> dict[str, Any]:
        """Reads the `epmx_whitelist` file again, as SIGHUP does; live sessions stay connected. A file that
        does not load is a 422 naming the problem, and the whitelist in force stays."""
        try:
            gw.reload_whitelist()
        except WhitelistError as exc:
            raise BadRequest(str(exc), status=422) from None
        assert gw.services.epmp is not None
        return {"appVersions": sorted(gw.services.epmp.whitelist.versions)}

    admin_login.install(app, gateway.settings)  # one session store and login throttle for /ui and /docs
    ui.install(app)

    @app.get("/healthz", tags=["operations"], summary="Check that the API answers")
    async def health() -> dict[str, str]:
        """`{"status": "ok"}` while the node serves; needs no token (for load balancers and health checks)."""
        return {"status": "ok"}

    docs.install(app, public=gateway.settings.api_docs_public)

    app.add_middleware(
        BodySizeLimit,
        max_bytes=gateway.settings.api_max_body_bytes,
        larger={imports.PATH_PATTERN: gateway.settings.import_max_bytes},
    )
    s = gateway.settings
    app.add_middleware(
        UnauthenticatedLimit,
        admin_token=admin_token,
        metrics=gateway.services.metrics,
        per_minute=s.api_unauthenticated_per_minute,
        burst=s.api_unauthenticated_burst,
        metrics_public=s.metrics_public,
    )
    app.add_middleware(AuditTrail, gateway=gateway, admin_token=admin_token)  # outermost: sees every write
    return app
