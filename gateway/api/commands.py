"""/v1/tenants/{tenant}/devices/{device}/commands/{type}: invoke an 11/CEP command, wait for its result,
read its state (Kaa's RCI, over HTTP)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from registry.commands import MAX_ID
from registry.models import CommandState

from ..services.commands.messages import WaitInterrupted
from ..services.commands.service import CommandService
from .body import model_body
from .deps import GatewayDep
from .errors import error_response
from .schemas.commands import CommandAccepted, CommandIn, CommandOut, CommandResultOut

router = APIRouter(prefix="/v1/tenants/{tenant}/devices/{device}/commands", tags=["commands"])


def _service(gw: GatewayDep) -> CommandService:
    commands: CommandService | None = gw.commands
    if commands is None:
        raise RuntimeError("the gateway is not running")
    return commands


@router.post(
    "/{command_type}",
    summary="Invoke a command on a device",
    response_model=CommandResultOut,
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": CommandIn.model_json_schema()}}}},
    responses={202: {"model": CommandAccepted}, 504: {"description": "no result before timeoutMs; `id` names it"}},
)
async def invoke_command(
    tenant: str,
    device: str,
    command_type: str,
    request: Request,
    gw: GatewayDep,
    wait: Annotated[bool, Query(description="false: answer 202 with the id at once")] = True,
) -> CommandResultOut | JSONResponse:
    """Invokes a command. It is pushed to the device's sessions that observe its type at once, or waits
    (pending) until the device asks for it, for `timeoutMs`. The call waits for the device's result
    (200) unless `wait=false` (202); at the timeout it answers 504 with the command's id."""
    body = await model_body(request, CommandIn)
    commands = _service(gw)
    command = await commands.invoke(tenant, device, command_type, body.payload, timeout_ms=body.timeout_ms)
    if not wait:
        accepted = CommandAccepted(id=command.id, state=command.state)
        return JSONResponse(accepted.model_dump(mode="json", by_alias=True), status_code=202)
    try:
        final = await commands.wait(command)
    except WaitInterrupted as exc:
        return error_response(exc.status, exc.message, id=command.id, state=command.state.value)
    if final.state.outstanding or final.state == CommandState.EXPIRED:
        message = f"no result within {body.timeout_ms} ms; the command is {final.state.value}"
        return error_response(504, message, id=final.id, state=final.state.value)
    return CommandResultOut.of(final)


@router.get("/{command_type}/{command_id}", summary="Get a command")
async def get_command(
    tenant: str, device: str, command_type: str, command_id: Annotated[int, Path(ge=1, le=MAX_ID)], gw: GatewayDep
) -> CommandOut:
    """A command's state: pending, delivered, succeeded, failed or expired, with the device's result."""
    return CommandOut.of(await gw.registry.commands.get(tenant, device, command_type, command_id))
