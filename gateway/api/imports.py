"""/v1/tenants/{tenant}/device-imports: batch registration from CSV, as jobs (docs/fleet.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException

from ..services.import_secrets import TooManyHeld
from ..services.imports import TEMPLATE, CsvRefused
from .deps import GatewayDep
from .errors import BadRequest, error_response
from .schemas.imports import ImportAccepted, ImportJobOut

if TYPE_CHECKING:
    from ..services.imports import ImportRunner

router = APIRouter(prefix="/v1/tenants/{tenant}/device-imports", tags=["device imports"])
template = APIRouter(tags=["device imports"])
PATH_PATTERN = r"^/v1/tenants/[^/]+/device-imports$"
"""The one API path whose body may be larger than `api_max_body_bytes` (up to `import_max_bytes`)."""
RETRY_HELD_S = 30
"""Retry-After when other imports' passwords fill the memory they may be held in until hashed."""


def _runner(gw: GatewayDep) -> ImportRunner:
    runner: ImportRunner | None = gw.imports
    if runner is None:
        raise RuntimeError("the gateway is not running")
    return runner


@template.get(
    "/v1/device-imports/template.csv", summary="Download the import CSV template", response_class=PlainTextResponse
)
async def import_template() -> PlainTextResponse:
    """A CSV to start from: every column, every credential form."""
    return PlainTextResponse(TEMPLATE, media_type="text/csv")


@router.post(
    "",
    summary="Import devices from CSV",
    status_code=202,
    openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def start_import(tenant: str, request: Request, gw: GatewayDep) -> ImportAccepted:
    """Checks the header at once (422 names what is wrong), then answers 202 with the job id; the rows
    are registered in the background: follow GET .../device-imports/{job}."""
    data = await request.body()
    if not data.strip():
        raise BadRequest("an empty upload: send the CSV as the request body")
    try:
        job = await _runner(gw).submit(tenant, data)
    except CsvRefused as exc:
        raise BadRequest(str(exc), "csv", status=422) from None
    except TooManyHeld as exc:
        headers = {"Retry-After": str(RETRY_HELD_S)} if exc.status == 429 else None
        raise HTTPException(exc.status, str(exc), headers=headers) from None
    return ImportAccepted(job_id=job.id, state=job.state, total=job.total)


@router.get("", summary="List device imports")
async def list_imports(tenant: str, gw: GatewayDep) -> list[ImportJobOut]:
    """The tenant's newest 100 jobs (without their row errors)."""
    return [ImportJobOut.of(job, []) for job in await gw.registry.imports.of_tenant(tenant)]


@router.get("/{job}", summary="Get a device import")
async def get_import(
    tenant: str,
    job: str,
    gw: GatewayDep,
    errors: Annotated[int, Query(ge=0, le=10_000, description="row errors to include, by row")] = 100,
) -> ImportJobOut:
    """State, counts (total, processed, created, unchanged, failed) and the first row errors."""
    found = await gw.registry.imports.get(tenant, job)
    return ImportJobOut.of(found, await gw.registry.imports.errors(job, errors))


@router.get(
    "/{job}/tokens",
    summary="Download an import's generated tokens",
    response_class=PlainTextResponse,
    response_model=None,
)
async def download_tokens(tenant: str, job: str, gw: GatewayDep) -> PlainTextResponse | JSONResponse:
    """The tokens the job generated, as `deviceId,token` CSV, once: after that 410."""
    pairs = await gw.registry.imports.take_tokens(tenant, job)
    if pairs is None:
        return error_response(410, "no generated tokens to download: none were made, or they were downloaded")
    body = "deviceId,token\n" + "".join(f"{device},{token}\n" for device, token in pairs)
    return PlainTextResponse(body, media_type="text/csv", headers={"Cache-Control": "no-store"})


@router.delete("/{job}", summary="Cancel a device import")
async def cancel_import(tenant: str, job: str, gw: GatewayDep) -> ImportJobOut:
    """Stops a queued or running job after the chunk it is writing; rows committed stay."""
    return ImportJobOut.of(await _runner(gw).cancel(tenant, job), [])
