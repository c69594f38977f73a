"""The dashboard's pages and their live regions. A page without a session sends the browser to the
login page; a live region without one is a 401 (its script then goes to the login page)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response

from registry.errors import NotFound, RegistryError

from ..api.deps import GatewayDep
from . import views
from .admin_login import signed_in
from .render import render
from .sessions import UI


class LoginRequired(Exception):
    """A page asked for without a session: answered with a redirect to the login page."""


def require_page_session(request: Request) -> None:
    if not signed_in(request, UI):
        raise LoginRequired


def require_live_session(request: Request) -> None:
    if not signed_in(request, UI):
        raise HTTPException(401, "log in at /ui/login")


pages = APIRouter(prefix="/ui", dependencies=[Depends(require_page_session)], include_in_schema=False)
live = APIRouter(prefix="/ui/live", dependencies=[Depends(require_live_session)], include_in_schema=False)


def _failed(exc: RegistryError | views.BadFilter) -> Response:
    status = 404 if isinstance(exc, NotFound) else 400
    message = exc.message if isinstance(exc, RegistryError) else str(exc)
    return render("error.html", status, status=status, message=message)


@pages.get("/")
async def overview_page(gw: GatewayDep) -> Response:
    return render("overview.html", view=await views.overview(gw), live_url="/ui/live/")


@live.get("/")
async def overview_live(gw: GatewayDep) -> Response:
    return render("_overview.html", view=await views.overview(gw))


@pages.get("/tenants/{tenant}")
async def tenant_page(tenant: str, request: Request, gw: GatewayDep) -> Response:
    try:
        filters = views.DeviceFilters.parse(dict(request.query_params))
        view = await views.tenant_view(gw, tenant, filters)
    except (RegistryError, views.BadFilter) as exc:
        return _failed(exc)
    live_url = request.url_for("tenant_live", tenant=tenant).path + filters.query_string()
    return render("tenant.html", view=view, filters=filters, live_url=live_url)


@live.get("/tenants/{tenant}")
async def tenant_live(tenant: str, request: Request, gw: GatewayDep) -> Response:
    try:
        filters = views.DeviceFilters.parse(dict(request.query_params))
        view = await views.tenant_view(gw, tenant, filters)
    except (RegistryError, views.BadFilter) as exc:
        return _failed(exc)
    return render("_tenant.html", view=view, filters=filters)


@pages.get("/tenants/{tenant}/devices/{device}")
async def device_page(tenant: str, device: str, request: Request, gw: GatewayDep) -> Response:
    try:
        view = await views.device_view(gw, tenant, device)
    except RegistryError as exc:
        return _failed(exc)
    live_url = request.url_for("device_live", tenant=tenant, device=device).path
    return render("device.html", view=view, live_url=live_url)


@live.get("/tenants/{tenant}/devices/{device}")
async def device_live(tenant: str, device: str, gw: GatewayDep) -> Response:
    try:
        view = await views.device_view(gw, tenant, device)
    except RegistryError as exc:
        return _failed(exc)
    return render("_device.html", view=view)
