"""Commands as applications and operators see them: invoked (pushed at once to a device that
observes), waited for, finished by a device's result or by their deadline.

The registry holds every command, so outstanding ones survive a restart. This holds what is live:
callers waiting for a result, and the timer that expires commands at their deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from registry import Registry
from registry.commands import encode_json
from registry.errors import RegistryError
from registry.models import Command, CommandState, now_ms, to_ms

from ...kp1.budget import ValidationBudget
from ...node.settings import GatewaySettings
from ...ops.metrics import Metrics
from ...ops.refusals import RefusalTally
from ..reach import Reach
from ..topics import command_result_topic
from .applications import MqttInvocations
from .devices import DeviceCommands
from .invocation_audit import InvocationAudit
from .messages import (
    TIMEOUT_MS_DEFAULT,
    TIMEOUT_MS_MAX,
    TIMEOUT_MS_MIN,
    CommandRefused,
    WaitInterrupted,
    check_type,
    result_message,
    status_of,
)

log = logging.getLogger(__name__)

EXPIRY_GRACE_S = 2.0
PRUNE_EVERY_S = 3600.0

Key = tuple[str, str, str, int]


def _key(command: Command) -> Key:
    return (command.tenant_id, command.device_id, command.type, command.id)


class CommandService:
    def __init__(
        self,
        registry: Registry,
        settings: GatewaySettings,
        metrics: Metrics,
        reach: Reach,
        refusals: RefusalTally,
        validation: ValidationBudget,
    ) -> None:
        self._registry = registry
        self._settings = settings
        self._metrics = metrics
        self._reach = reach
        self._waiters: dict[Key, list[asyncio.Future[Command | None]]] = {}
        """None for a waiter means: stop waiting (device deleted, or the gateway stopping)."""
        self._stopping = False
        self._next_due: int | None = None
        self._wake = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self.devices = DeviceCommands(registry, settings, reach, validation, self._finished)
        """The device side: what inbound 1/KP requests and new subscriptions reach."""
        audit = InvocationAudit(registry, settings, metrics, refusals)
        self.mqtt = MqttInvocations(self.invoke, settings, metrics, reach, validation, audit)
        """Invocations published by service accounts."""

    def start(self) -> None:
        self._timer = asyncio.create_task(self._expire_forever())

    async def stop(self) -> None:
        """Callers still waiting are answered now (503), not when the API's shutdown gives up on them."""
        self._stopping = True
        self._release(lambda _key: True)
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)

    async def invoke(
        self,
        tenant_id: str,
        device_id: str,
        command_type: str,
        payload: Any,
        *,
        timeout_ms: int = TIMEOUT_MS_DEFAULT,
        origin: str = "api",
        command_id: int | None = None,
    ) -> Command:
        """A new command, pushed at once to the device's sessions that observe its type."""
        try:
            command = await self._create(tenant_id, device_id, command_type, payload, timeout_ms, origin, command_id)
        except (CommandRefused, RegistryError) as exc:
            self._metrics.commands_refused[str(status_of(exc))] += 1
            raise
        self._metrics.commands_invoked += 1
        self._due(to_ms(command.deadline))
        if await self.devices.push([command]):
            return command.model_copy(update={"state": CommandState.DELIVERED})
        return command

    async def _create(
        self,
        tenant_id: str,
        device_id: str,
        command_type: str,
        payload: Any,
        timeout_ms: int,
        origin: str,
        command_id: int | None,
    ) -> Command:
        check_type(command_type)
        if not TIMEOUT_MS_MIN <= timeout_ms <= TIMEOUT_MS_MAX:
            raise CommandRefused(422, f"timeoutMs must be {TIMEOUT_MS_MIN}-{TIMEOUT_MS_MAX}", "timeoutMs")
        if len(encode_json(payload, "payload").encode()) > self._settings.commands_max_payload_bytes:
            raise CommandRefused(413, f"payload over {self._settings.commands_max_payload_bytes} bytes", "payload")
        return await self._registry.commands.invoke(
            tenant_id,
            device_id,
            command_type,
            payload,
            timeout_ms=timeout_ms,
            origin=origin,
            max_outstanding=self._settings.commands_max_outstanding,
            command_id=command_id,
        )

    async def wait(self, command: Command) -> Command:
        """The command once it has finished, or as it is when its deadline (and a grace for the expiry
        timer) has passed. Raises WaitInterrupted when its device is deleted or the gateway stops."""
        key = _key(command)
        future: asyncio.Future[Command | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        try:
            current = await self._registry.commands.get(*key)
            if not current.state.outstanding:
                return current
            if self._stopping:
                raise WaitInterrupted(503, "the gateway is stopping")
            remaining = (to_ms(command.deadline) - now_ms()) / 1000 + EXPIRY_GRACE_S
            try:
                finished = await asyncio.wait_for(asyncio.shield(future), max(remaining, 0.0))
            except TimeoutError:
                return await self._registry.commands.get(*key)
            if finished is None:
                raise (
                    WaitInterrupted(503, "the gateway is stopping")
                    if self._stopping
                    else WaitInterrupted(404, f"device {command.device_id!r} was deleted")
                )
            return finished
        finally:
            waiting = self._waiters.get(key, [])
            with contextlib.suppress(ValueError):
                waiting.remove(future)
            if not waiting:
                self._waiters.pop(key, None)

    def forget(self, tenant_id: str, device_id: str | None = None) -> None:
        """A deleted device (or tenant): its commands went with it, and whoever waits for one hears so."""
        self._release(lambda key: key[0] == tenant_id and (device_id is None or key[1] == device_id))

    def _release(self, match: Callable[[Key], bool]) -> None:
        for key in [k for k in self._waiters if match(k)]:
            for future in self._waiters.pop(key):
                if not future.done():
                    future.set_result(None)

    def _finished(self, command: Command) -> None:
        """A result or an expiry: waiting callers learn it, and so do the tenant's applications."""
        self._metrics.commands_finished[command.state.value] += 1
        for future in self._waiters.pop(_key(command), []):
            if not future.done():
                future.set_result(command)
        self._reach.publish(
            command_result_topic(command.tenant_id, command.device_id, command.type),
            json.dumps(result_message(command), separators=(",", ":")).encode(),
            1,
        )

    # -- the expiry timer ------------------------------------------------------------------------------------

    def _due(self, deadline_ms: int) -> None:
        if self._next_due is None or deadline_ms < self._next_due:
            self._next_due = deadline_ms
            self._wake.set()

    async def _expire_forever(self) -> None:
        """Sleeps until the earliest deadline (the registry's, at start: commands that expired while the
        gateway was down expire now), expires what is due, and prunes finished commands hourly."""
        await self._reload_next_due()
        last_prune = 0.0
        while True:
            try:
                delay = PRUNE_EVERY_S if self._next_due is None else max(0.0, (self._next_due - now_ms()) / 1000)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(delay, PRUNE_EVERY_S))
                self._wake.clear()
                if self._next_due is not None and self._next_due <= now_ms():
                    for command in await self._registry.commands.expire_due(node=self._settings.node_id):
                        self._finished(command)
                    await self._reload_next_due()
                if time.monotonic() - last_prune > PRUNE_EVERY_S:
                    last_prune = time.monotonic()
                    await self._registry.commands.prune(int(self._settings.event_retention_hours * 3_600_000))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("expiring commands failed; retrying")
                await asyncio.sleep(1.0)

    async def _reload_next_due(self) -> None:
        """From the registry; a deadline set by an invocation during the read is kept."""
        self._next_due = None
        found = await self._registry.commands.next_deadline()
        if found is not None:
            self._due(found)
