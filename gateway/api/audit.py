"""The audit trail of the management API: every write (POST, PUT, PATCH, DELETE) is one structured
log line (`event=api_write`) and a row read back at `GET /v1/audit`, whoever made it and however it
ended (a refused or unauthenticated write too). Written after the response is sent: it costs the
caller nothing, and a failure to record is logged, never turned into the caller's error."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..ops.audit import audit, secret_hint
from .deps import GatewayDep
from .schemas import AuditPageOut

if TYPE_CHECKING:
    from ..node.runtime import Gateway

log = logging.getLogger(__name__)
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SECRET_PARAMS = frozenset({"token"})
"""Path parameters shown as their hint in a target: a token in a path is still a token."""
_DETAIL_BYTES = 2048

router = APIRouter(tags=["operations"])


@router.get("/v1/audit", summary="Read the audit trail")
async def read_audit(
    gw: GatewayDep,
    tenant: Annotated[str | None, Query(description="only writes to this tenant")] = None,
    after: Annotated[int, Query(ge=0, description="`next` of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPageOut:
    """Management writes, oldest first: who (`actor`), what (`action`, the operation), on what
    (`target`), and how it ended (`status`, `detail` for a refusal)."""
    entries = await gw.registry.audit.page(tenant_id=tenant, after=after, limit=limit)
    return AuditPageOut.of(entries, limit)


def admin_actor(admin_token: str) -> str:
    """The admin token's id: a digest, so the trail names which token without holding it."""
    return "admin:" + hashlib.sha256(admin_token.encode()).hexdigest()[:12]


class AuditTrail:
    """ASGI middleware around the API app."""

    def __init__(self, app: ASGIApp, gateway: Gateway, admin_token: str) -> None:
        self.app = app
        self._gateway = gateway
        self._admin_token = admin_token.encode()
        self._admin_actor = admin_actor(admin_token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in WRITES:
            await self.app(scope, receive, send)
            return
        status = 500
        body = b""

        async def watched(message: Message) -> None:
            nonlocal status, body
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and status >= 400 and len(body) < _DETAIL_BYTES:
                body += message.get("body", b"")[: _DETAIL_BYTES - len(body)]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            await self._record(scope, status, body)

    async def _record(self, scope: Scope, status: int, body: bytes) -> None:
        route = scope.get("route")
        params: dict[str, Any] = scope.get("path_params") or {}
        template = getattr(route, "path", None)
        action = f"{scope['method']} {template or '(no route)'}"
        target = _target(template, params) if template else str(scope.get("path", ""))[:512]
        tenant = params.get("tenant")
        actor = self._actor(scope)
        # a success may say what it did that the action and target do not (a CA trusted without proof)
        detail = _message(body) if status >= 400 else (scope.get("state") or {}).get("audit_detail")
        audit("api_write", actor=actor, action=action, target=target, tenant=tenant, status=status, detail=detail)
        try:
            await self._gateway.registry.audit.record(
                actor=actor, action=action, tenant_id=tenant, target=target, status=status, detail=detail
            )
        except Exception:
            log.exception("could not record %s in the audit trail", action)

    def _actor(self, scope: Scope) -> str:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                if scheme.lower() == b"bearer" and secrets.compare_digest(given.strip(), self._admin_token):
                    return self._admin_actor
                return "anonymous (wrong token)"
        return "anonymous"


def _target(template: str, params: dict[str, Any]) -> str:
    target = template
    for name, value in params.items():
        shown = f"[sha256:{secret_hint(str(value))}]" if name in SECRET_PARAMS else str(value)
        target = target.replace("{" + name + "}", shown)
    return target


def _message(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    message = parsed.get("message") if isinstance(parsed, dict) else None
    return str(message)[:512] if message is not None else None
