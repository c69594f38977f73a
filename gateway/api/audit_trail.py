"""The audit trail of the management API, as ASGI middleware: every write (POST, PUT, PATCH, DELETE)
the admin makes is one structured log line (`event=api_write`) and one entry of `GET /v1/audit`,
however it ended; a create names what it created. A write without the admin token (refused, or a
sign-in form) is counted per address, actor, status and minute instead (gateway/ops/refusals.py):
whoever floods the API makes a few rows, not one each. Recorded after the response is sent: it costs
the caller nothing, and a failure to record is logged, never turned into the caller's error."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry.audit import bounded

from ..ops.audit import audit, secret_hint
from .callers import Caller, address_of, admin_actor, caller_of

if TYPE_CHECKING:
    from ..node.runtime import Gateway

log = logging.getLogger(__name__)
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SECRET_PARAMS = frozenset({"token"})
"""Path parameters shown as their hint in a target: a token in a path is still a token."""
DETAIL_BYTES = 2048
"""Of a refusal's body, read for its message."""
CREATED_BODY_BYTES = 65_536
"""Of a create's body (201, or 202 for a command or an import), read for the id of what it made."""
CREATED = frozenset({201, 202})
INVOKE = "/commands/{command_type}"
"""An invocation makes a command whatever it answers (200 with the result, 504 at its timeout)."""


class AuditTrail:
    """Outermost middleware of the API app: it sees every write, refused ones included."""

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
            elif message["type"] == "http.response.body":
                keep = DETAIL_BYTES if status >= 400 else CREATED_BODY_BYTES if scope["method"] == "POST" else 0
                if len(body) < keep:
                    body += message.get("body", b"")[: keep - len(body)]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            await self._record(scope, status, body)

    async def _record(self, scope: Scope, status: int, body: bytes) -> None:
        route = scope.get("route")
        params: dict[str, Any] = scope.get("path_params") or {}
        template = getattr(route, "path", None)
        method = scope["method"]
        target = _target(template, params) if template else str(scope.get("path", ""))
        # a success may say what it did that the action and target do not (a CA trusted without proof)
        detail = _message(body) if status >= 400 else (scope.get("state") or {}).get("audit_detail")
        caller = caller_of(scope, self._admin_token)
        action = f"{method} {template or ('(no route)' if caller is Caller.ADMIN else '(not routed)')}"
        if caller is not Caller.ADMIN:  # not trusted with a row each, nor with naming a tenant
            self._gateway.services.refusals.note(
                "api",
                source=address_of(scope),
                actor=caller.value,
                status=status,
                tenant_id=None,
                action=action,
                target=target,
                detail=detail,
            )
            return
        if method == "POST" and (status in CREATED or (template or "").endswith(INVOKE)):
            target = _created(target, body)
        tenant = None if params.get("tenant") is None else str(params["tenant"])
        limit = self._gateway.settings.audit_max_field_chars
        audit(
            "api_write",
            actor=self._admin_actor,
            action=action,
            target=bounded(target, limit),
            tenant=None if tenant is None else bounded(tenant, limit),
            status=status,
            detail=detail,
        )
        try:
            await self._gateway.registry.audit.record(
                actor=self._admin_actor,
                action=action,
                tenant_id=tenant,
                target=target,
                status=status,
                detail=detail,
            )
        except Exception:
            log.exception("could not record %s in the audit trail", action)


def _target(template: str, params: dict[str, Any]) -> str:
    target = template
    for name, value in params.items():
        shown = f"[sha256:{secret_hint(str(value))}]" if name in SECRET_PARAMS else str(value)
        target = target.replace("{" + name + "}", shown)
    return target


def _created(collection: str, body: bytes) -> str:
    """The path of what a create made: its collection's and the id of the answer (a token's hint)."""
    try:
        made = json.loads(body)
    except ValueError:
        return collection
    if not isinstance(made, dict):
        return collection
    if isinstance(made.get("token"), str):
        return f"{collection}/[sha256:{secret_hint(made['token'])}]"
    for key in ("id", "jobId"):
        value = made.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return f"{collection}/{value}"
    return collection


def _message(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    message = parsed.get("message") if isinstance(parsed, dict) else None
    return str(message)[:512] if message is not None else None
