"""The device side of 11/CEP: a device fetches (and observes or not) its outstanding commands,
reports results, and is pushed new commands on the status topics it subscribed to."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from registry import Registry
from registry.commands import ResultOutcome
from registry.models import Command, CommandState

from ...auth.identity import DeviceIdentity
from ...kp1 import cep
from ...kp1.budget import ValidationBudget
from ...kp1.reply import Kp1Error, Reply, answered, error_reply, status_reply
from ...kp1.topic import Kp1Topic, topics_matched
from ...node.settings import GatewaySettings
from ..reach import Reach
from .messages import commands_json

if TYPE_CHECKING:
    from ...mqtt.session import ClientSession

UNOBSERVED_ATTR = "gateway.cex_unobserved"
"""Command types a session asked not to be pushed (`{"observe": false}`), at most MAX_UNOBSERVED."""
MAX_UNOBSERVED = 64


class DeviceCommands:
    def __init__(
        self,
        registry: Registry,
        settings: GatewaySettings,
        reach: Reach,
        validation: ValidationBudget,
        finished: Callable[[Command], None],
    ) -> None:
        self._registry = registry
        self._settings = settings
        self._reach = reach
        self._validation = validation
        self._finished = finished
        """Told of every command a device's result finished (waiting callers, applications)."""

    async def device_request(
        self, session: ClientSession, identity: DeviceIdentity, request: Kp1Topic, payload: bytes
    ) -> Reply | None:
        """`kp1/<app version>/cex/<token>/command/<type>[/<id>]` or `.../result/<type>[/<id>]`."""
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
        return Reply(request.topic + "/status", commands_json(commands))

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
        await self.push(commands, only=session, filters=filters)

    async def push(
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
                body = commands_json(of_type)
                held = self._reach.subscriptions_of(session) if filters is None else filters
                topics = topics_matched(held, cep.EXTENSION, _status_rest(command_type))
                if any(self._reach.deliver(session, topic, body, 1) for topic in topics):  # once: the first taker
                    reached.update((c.type, c.id) for c in of_type)
        pending = [(c.type, c.id) for c in commands if c.state == CommandState.PENDING and (c.type, c.id) in reached]
        await self._registry.commands.mark_delivered(tenant_id, device_id, pending)
        return bool(reached)


def _status_rest(command_type: str) -> str:
    return f"{cep.FETCH}/{command_type}/status"


def _named_type(topic_filter: str) -> str:
    """The command type a filter names (`.../command/<type>/status`), or any type for a wildcard there."""
    levels = topic_filter.split("/")
    return levels[5] if len(levels) > 5 and levels[5] not in ("+", "#") else "x"
