"""The gateway's own `$gateway/...` topics, where a tenant's service accounts (its applications) meet
its devices by device id, never by endpoint token:

- `$gateway/events/<tenant>/<subject>`: lifecycle, connectivity, metadata and command events;
- `$gateway/data/<tenant>/<device id>/<extension>`: what devices publish (2/DCP `dcx`, forwarded ones);
- `$gateway/commands/<tenant>/<device id>/<type>`: an application invokes a command (it publishes);
- `$gateway/commands/<tenant>/<device id>/<type>/result`: and reads its result.

Device topics (1/KP) are gateway/kp1/topic.py.
"""

from __future__ import annotations

from dataclasses import dataclass

GATEWAY = "$gateway"
EVENTS_ROOT = f"{GATEWAY}/events"
DATA_ROOT = f"{GATEWAY}/data"
COMMANDS_ROOT = f"{GATEWAY}/commands"
RESULT = "result"
_READABLE_ROOTS = ("events", "data", "commands")


def events_topic(tenant_id: str, subject: str) -> str:
    return f"{EVENTS_ROOT}/{tenant_id}/{subject}"


def data_topic(tenant_id: str, device_id: str, extension: str) -> str:
    return f"{DATA_ROOT}/{tenant_id}/{device_id}/{extension}"


def command_result_topic(tenant_id: str, device_id: str, command_type: str) -> str:
    return f"{COMMANDS_ROOT}/{tenant_id}/{device_id}/{command_type}/{RESULT}"


def tenant_of_gateway_topic(topic: str) -> str | None:
    """The tenant a `$gateway/<root>/<tenant>/...` topic belongs to; None for any other topic."""
    levels = topic.split("/", 3)
    if len(levels) < 3 or levels[0] != GATEWAY or levels[1] not in _READABLE_ROOTS or not levels[2]:
        return None
    return levels[2]


@dataclass(frozen=True, slots=True)
class CommandTopic:
    tenant_id: str
    device_id: str
    command_type: str


def parse_command_topic(topic: str) -> CommandTopic | None:
    """`$gateway/commands/<tenant>/<device>/<type>`, exactly; None otherwise."""
    levels = topic.split("/")
    if len(levels) != 5 or f"{levels[0]}/{levels[1]}" != COMMANDS_ROOT or not all(levels[2:]):
        return None
    return CommandTopic(levels[2], levels[3], levels[4])


def service_may_use(tenant_id: str, topic: str, *, publish: bool = False) -> bool:
    """A service account reads below its own tenant's `$gateway/{events,data,commands}/<tenant>/`
    (wildcards only below the tenant level) and publishes command invocations there, nothing else."""
    if publish:
        command = parse_command_topic(topic)
        return command is not None and command.tenant_id == tenant_id
    levels = topic.split("/", 3)
    return (
        len(levels) == 4
        and levels[0] == GATEWAY
        and levels[1] in _READABLE_ROOTS
        and levels[2] == tenant_id
        and bool(levels[3])
    )
