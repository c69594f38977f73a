"""Command invocations a tenant's applications (service accounts) publish over MQTT on
`$gateway/commands/<tenant>/<device id>/<type>`: `{"id"?, "payload", "timeoutMs"?}`. Each is admitted
by the account's rate, sized up before it is parsed, and answered on the result topic, a refusal
included, with its status code and the id it gave (or null)."""

from __future__ import annotations

from typing import Any, Protocol

from registry.errors import RegistryError
from registry.models import Command

from ...auth.identity import DeviceIdentity
from ...kp1 import cep
from ...kp1.budget import ValidationBudget
from ...kp1.payload import JsonReader, PayloadError
from ...kp1.reply import Kp1Error
from ...kp1.topic import MAX_REQUEST_ID
from ...node.settings import GatewaySettings
from ...ops.metrics import Metrics
from ..reach import Reach
from ..topics import command_result_topic, parse_command_topic
from .invocation_audit import InvocationAudit
from .messages import TIMEOUT_MS_DEFAULT, CommandRefused, refusal_message, result_topic_refusal

INVOCATION_ENVELOPE_BYTES = 1024
"""What an MQTT invocation may add to its payload (`id`, `timeoutMs`, spacing) before it is too long to parse."""


class Invoke(Protocol):
    """CommandService.invoke, as an invocation from MQTT calls it."""

    async def __call__(
        self,
        tenant_id: str,
        device_id: str,
        command_type: str,
        payload: Any,
        *,
        timeout_ms: int = ...,
        origin: str = ...,
        command_id: int | None = ...,
    ) -> Command: ...


class MqttInvocations:
    def __init__(
        self,
        invoke: Invoke,
        settings: GatewaySettings,
        metrics: Metrics,
        reach: Reach,
        validation: ValidationBudget,
        audit: InvocationAudit,
    ) -> None:
        self._invoke = invoke
        self._settings = settings
        self._metrics = metrics
        self._reach = reach
        self._validation = validation
        self.audit = audit

    async def invoke(self, service: DeviceIdentity, topic: str, payload: bytes) -> None:
        target = parse_command_topic(topic)
        if target is None:
            return
        given: int | None = None
        status, detail = 202, None
        try:
            if not self.audit.admit(service):
                self._metrics.commands_refused["429"] += 1
                raise CommandRefused(429, f"over {self.audit.per_minute:g} invocations a minute; retry later")
            try:
                body = _invocation(payload, self._settings, self._validation.reader(service, "commands"))
            except CommandRefused as exc:  # refused before it reached invoke(), which counts the others
                self._metrics.commands_refused[str(exc.status)] += 1
                raise
            given = body.get("id")
            await self._invoke(
                target.tenant_id,
                target.device_id,
                target.command_type,
                body.get("payload"),
                timeout_ms=body.get("timeoutMs", TIMEOUT_MS_DEFAULT),
                origin=f"service:{service.device_id}",
                command_id=given,
            )
        except (CommandRefused, RegistryError, Kp1Error) as exc:
            status, detail = result_topic_refusal(exc)
            self.refuse(topic, status, detail, command_id=given)
        await self.audit.record(service, topic, status, detail)

    def refuse(self, topic: str, status: int, reason: str, *, command_id: int | None = None) -> None:
        """An application's invocation that made no command: the refusal goes out on the result topic."""
        target = parse_command_topic(topic)
        if target is None:
            return
        result_topic = command_result_topic(target.tenant_id, target.device_id, target.command_type)
        self._reach.publish(result_topic, refusal_message(command_id, status, reason), 1)


def _invocation(payload: bytes, settings: GatewaySettings, read: JsonReader) -> dict[str, Any]:
    if len(payload) > settings.commands_max_payload_bytes + INVOCATION_ENVELOPE_BYTES:  # too long to be read
        raise CommandRefused(413, f"payload over {settings.commands_max_payload_bytes} bytes")
    try:
        body = read(payload)
    except PayloadError as exc:
        raise CommandRefused(exc.status, str(exc)) from None
    if not isinstance(body, dict) or set(body) - {"id", "payload", "timeoutMs"}:
        raise CommandRefused(400, 'payload must be a JSON object {"id"?, "payload", "timeoutMs"?}')
    if "id" in body and not cep.positive_int(body["id"]):
        raise CommandRefused(400, f"id must be an integer 1-{MAX_REQUEST_ID}")
    timeout = body.get("timeoutMs", TIMEOUT_MS_DEFAULT)
    if not isinstance(timeout, int) or isinstance(timeout, bool):
        raise CommandRefused(400, "timeoutMs must be an integer")
    return body
