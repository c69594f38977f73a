"""11/CEP commands between a tenant's applications and its devices.

Applications invoke over REST (`POST /v1/tenants/{t}/devices/{d}/commands/{type}`) or MQTT
(`$gateway/commands/<tenant>/<device id>/<type>`); results go back to the waiting REST call and out on
`$gateway/commands/<tenant>/<device id>/<type>/result`. Devices fetch and observe commands on
`kp1/<app version>/cex/<token>/command/<type>` and report on `.../result/<type>`.

The registry holds every command, so outstanding ones survive a restart. This holds what is live:
callers waiting for a result, the push to sessions that observe, and the timer that expires
commands at their deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from registry import Registry
from registry.commands import ResultOutcome, encode_json
from registry.errors import Conflict, Invalid, LimitReached, NotFound, RegistryError
from registry.models import Command, CommandState, now_ms, to_ms

from ..auth.identity import DeviceIdentity
from ..kp1 import cep
from ..kp1.budget import ValidationBudget
from ..kp1.payload import JsonReader, PayloadError
from ..kp1.reply import Kp1Error, Reply, answered, error_reply, status_reply
from ..kp1.topic import MAX_REQUEST_ID, Kp1Topic, topics_matched
from ..node.settings import GatewaySettings
from ..ops.metrics import Metrics
from ..ops.refusals import RefusalTally
from .invocations import InvocationAudit
from .reach import Reach
from .topics import command_result_topic, parse_command_topic

if TYPE_CHECKING:
    from ..mqtt.session import ClientSession

log = logging.getLogger(__name__)

TIMEOUT_MS_DEFAULT, TIMEOUT_MS_MIN, TIMEOUT_MS_MAX = 30_000, 1_000, 300_000
UNOBSERVED_ATTR = "gateway.cex_unobserved"
"""Command types a session asked not to be pushed (`{"observe": false}`), at most MAX_UNOBSERVED."""
MAX_UNOBSERVED = 64
EXPIRY_GRACE_S = 2.0
PRUNE_EVERY_S = 3600.0
INVOCATION_ENVELOPE_BYTES = 1024
"""What an MQTT invocation may add to its payload (`id`, `timeoutMs`, spacing) before it is too long to parse."""

Key = tuple[str, str, str, int]


class WaitInterrupted(Exception):
    """A caller waiting for a result stops early: its device was deleted (404) or the gateway is
    stopping (503). The command itself is as the registry says."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class CommandRefused(Exception):
    """An invocation refused before it reached the registry (type, payload size, timeout)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def check_type(command_type: str) -> None:
    if not cep.TYPE_PATTERN.fullmatch(command_type):
        raise CommandRefused(
            422, f"invalid command type {command_type[:64]!r}: 1-64 of A-Z a-z 0-9 _ -, not only digits", "type"
        )


def result_message(command: Command) -> dict[str, Any]:
    """What the result topic and a finished REST call carry."""
    status = command.status_code if command.status_code is not None else 504
    phrase = command.reason_phrase
    if command.state == CommandState.EXPIRED:
        phrase = "no result before the command's timeout"
    return {
        "id": command.id,
        "state": command.state.value,
        "statusCode": status,
        "reasonPhrase": phrase,
        "payload": command.result,
    }


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
        self._validation = validation
        self._waiters: dict[Key, list[asyncio.Future[Command | None]]] = {}
        """None for a waiter means: stop waiting (device deleted, or the gateway stopping)."""
        self._stopping = False
        self._next_due: int | None = None
        self._wake = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self.invocations = InvocationAudit(registry, settings, metrics, refusals)

    def start(self) -> None:
        self._timer = asyncio.create_task(self._expire_forever())

    async def stop(self) -> None:
        """Callers still waiting are answered now (503), not when the API's shutdown gives up on them."""
        self._stopping = True
        self._release(lambda _key: True)
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)

    # -- applications ---------------------------------------------------------------------------------

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
            self._metrics.commands_refused[str(_status(exc))] += 1
            raise
        self._metrics.commands_invoked += 1
        self._due(to_ms(command.deadline))
        if await self._push([command]):
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

    async def invoke_from_mqtt(self, service: DeviceIdentity, topic: str, payload: bytes) -> None:
        """`{"id"?, "payload", "timeoutMs"?}` published by an application. A refusal is published on the
        result topic too, with its status code and the id it gave (or null)."""
        target = parse_command_topic(topic)
        if target is None:
            return
        given: int | None = None
        status, detail = 202, None
        try:
            if not self.invocations.admit(service):
                self._metrics.commands_refused["429"] += 1
                raise CommandRefused(429, f"over {self.invocations.per_minute:g} invocations a minute; retry later")
            try:
                body = _mqtt_invocation(payload, self._settings, self._validation.reader(service, "commands"))
            except CommandRefused as exc:  # refused before it reached invoke(), which counts the others
                self._metrics.commands_refused[str(exc.status)] += 1
                raise
            given = body.get("id")
            await self.invoke(
                target.tenant_id,
                target.device_id,
                target.command_type,
                body.get("payload"),
                timeout_ms=body.get("timeoutMs", TIMEOUT_MS_DEFAULT),
                origin=f"service:{service.device_id}",
                command_id=given,
            )
        except (CommandRefused, RegistryError, Kp1Error) as exc:
            status, detail = _refusal(exc)
            self.refuse(topic, status, detail, command_id=given)
        await self.invocations.record(service, topic, status, detail)

    def refuse(self, topic: str, status: int, message: str, *, command_id: int | None = None) -> None:
        """An application's invocation that made no command: the refusal goes out on the result topic."""
        target = parse_command_topic(topic)
        if target is None:
            return
        refusal = {"id": command_id, "state": "refused", "statusCode": status, "reasonPhrase": message, "payload": None}
        self._reach.publish(
            command_result_topic(target.tenant_id, target.device_id, target.command_type),
            json.dumps(refusal, separators=(",", ":")).encode(),
            1,
        )

    # -- devices (kp1/<app version>/cex/<token>/...) -----------------------------------------------------

    async def device_request(
        self, session: ClientSession, identity: DeviceIdentity, request: Kp1Topic, payload: bytes
    ) -> Reply | None:
        return await answered(request, self._serve(session, identity, request, payload), "11/CEP")

    async def _serve(
        self, session: ClientSession, identity: DeviceIdentity, request: Kp1Topic, payload: bytes
    ) -> Reply | None:
        kind, command_type = cep.resource(request.path)
        if kind == cep.FETCH:
            return await self._fetch(session, identity, request, command_type, payload)
        return await self._results(identity, request, command_type, payload)

    async def _fetch(
        self, session: ClientSession, identity: DeviceIdentity, request: Kp1Topic, command_type: str, payload: bytes
    ) -> Reply:
        """The outstanding commands of the type, always answered (on `.../command/<type>[/<id>]/status`:
        without a request id that is where pushed commands arrive too)."""
        observe = cep.parse_fetch(payload, self._settings, self._validation.reader(identity, cep.EXTENSION))
        if observe is not None:
            unobserved: set[str] = session.attributes.setdefault(UNOBSERVED_ATTR, set())
            if observe:
                unobserved.discard(command_type)
            elif command_type in unobserved or len(unobserved) < MAX_UNOBSERVED:
                unobserved.add(command_type)
            else:
                raise Kp1Error(429, f"more than {MAX_UNOBSERVED} command types unobserved")
        commands = await self._registry.commands.outstanding(identity.tenant_id, identity.device_id, command_type)
        pending = [(c.type, c.id) for c in commands if c.state == CommandState.PENDING]
        await self._registry.commands.mark_delivered(identity.tenant_id, identity.device_id, pending)
        return Reply(request.topic + "/status", _commands_json(commands))

    async def _results(
        self, identity: DeviceIdentity, request: Kp1Topic, command_type: str, payload: bytes
    ) -> Reply | None:
        results = cep.parse_results(payload, self._settings, self._validation.reader(identity, cep.EXTENSION))
        outcomes = await self._registry.commands.record_results(
            identity.tenant_id, identity.device_id, command_type, results, node=self._settings.node_id
        )
        unknown, finished = [], []
        for result, outcome, command in outcomes:
            if outcome == ResultOutcome.RECORDED and command is not None:
                self._finished(command)
            elif outcome == ResultOutcome.UNKNOWN:
                unknown.append(str(result.id))
            elif outcome == ResultOutcome.FINISHED and command is not None:
                finished.append(f"{result.id} ({command.state.value})")
        if unknown:
            return error_reply(request, 404, f"unknown {command_type!r} command id(s): {', '.join(unknown)}")
        if finished:
            return error_reply(request, 409, f"{command_type!r} command(s) already finished: {', '.join(finished)}")
        return status_reply(request)

    @staticmethod
    def carries_commands(filters: Iterable[str]) -> bool:
        """Whether a device subscribing to (or resuming with) these filters is where commands arrive:
        it is then sent its outstanding ones (observe is the default), so a device that was offline
        gets what waited for it."""
        return any(any(topics_matched([f], cep.EXTENSION, _status_rest(_named_type(f)))) for f in filters)

    async def push_outstanding(self, session: ClientSession, identity: DeviceIdentity, filters: list[str]) -> None:
        """Run by Inbound in the device's request order, under its pending-request bound, for the filters
        just added: a device that subscribes again and again queues its own pushes, it does not
        multiply them."""
        commands = await self._registry.commands.outstanding(identity.tenant_id, identity.device_id)
        await self._push(commands, only=session, filters=filters)

    # -- pushing, finishing, expiring ------------------------------------------------------------------------

    async def _push(
        self, commands: list[Command], only: ClientSession | None = None, filters: list[str] | None = None
    ) -> bool:
        """To every connected session of the device that subscribed to the type's status topic (on
        `filters`, when given) and did not turn observe off, once per session and type; those that
        reached one are `delivered`. True when any did."""
        if not commands:
            return False
        tenant_id, device_id = commands[0].tenant_id, commands[0].device_id
        by_type: dict[str, list[Command]] = {}
        for command in commands:
            by_type.setdefault(command.type, []).append(command)
        sessions = [only] if only is not None else self._reach.sessions_of(tenant_id, device_id)
        reached: set[tuple[str, int]] = set()
        for session in sessions:
            unobserved = session.attributes.get(UNOBSERVED_ATTR, ())
            for command_type, of_type in by_type.items():
                if command_type in unobserved:
                    continue
                body = _commands_json(of_type)
                held = self._reach.subscriptions_of(session) if filters is None else filters
                topics = topics_matched(held, cep.EXTENSION, _status_rest(command_type))
                if any(self._reach.deliver(session, topic, body, 1) for topic in topics):  # once: the first taker
                    reached.update((c.type, c.id) for c in of_type)
        pending = [(c.type, c.id) for c in commands if c.state == CommandState.PENDING and (c.type, c.id) in reached]
        await self._registry.commands.mark_delivered(tenant_id, device_id, pending)
        return bool(reached)

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


def _commands_json(commands: list[Command]) -> bytes:
    return json.dumps([{"id": c.id, "payload": c.payload} for c in commands], separators=(",", ":")).encode()


def _status_rest(command_type: str) -> str:
    return f"{cep.FETCH}/{command_type}/status"


def _named_type(topic_filter: str) -> str:
    """The command type a filter names (`.../command/<type>/status`), or any type for a wildcard there."""
    levels = topic_filter.split("/")
    return levels[5] if len(levels) > 5 and levels[5] not in ("+", "#") else "x"


def _mqtt_invocation(payload: bytes, settings: GatewaySettings, read: JsonReader) -> dict[str, Any]:
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


def _status(exc: CommandRefused | RegistryError) -> int:
    """The HTTP status an invocation refused this way gets."""
    if isinstance(exc, CommandRefused):
        return exc.status
    statuses: dict[type[RegistryError], int] = {NotFound: 404, Conflict: 409, LimitReached: 429, Invalid: 422}
    return statuses.get(type(exc), 400)


def _refusal(exc: Exception) -> tuple[int, str]:
    """(status, reason) for the result topic: 400 where REST says 422 (1/KP has no 422)."""
    if isinstance(exc, Kp1Error):
        return exc.status, exc.phrase
    assert isinstance(exc, (CommandRefused, RegistryError))
    status = _status(exc)
    return (400 if status == 422 else status), exc.message
