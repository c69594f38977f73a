"""Everything the gateway takes from amqtt, in one place: its plugin API.

The session layer, router and codecs are ours (gateway/mqtt/); amqtt gives the plugin classes our
device-auth and topic-access plugins derive from, the plugin manager that loads them from a
`plugins` config, the broker event names, and its `Session`, the type a plugin is handed.
No other gateway module imports amqtt: tests/test_amqtt_api.py checks that, and checks the
signatures in `USED` against the installed amqtt, so an upgrade that changes one fails there.
"""

from __future__ import annotations

from typing import cast

from amqtt.contexts import Action, BaseContext
from amqtt.events import BrokerEvents
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.plugins.manager import PluginManager
from amqtt.session import Session

AMQTT_VERSION = "0.12.1"

# The callables we call or override, with the parameters we rely on (checked by the test).
USED: dict[str, tuple[object, tuple[str, ...]]] = {
    "PluginManager.__init__": (PluginManager.__init__, ("self", "namespace", "context", "loop")),
    "PluginManager.fire_event": (PluginManager.fire_event, ("self", "event_name", "wait", "method_kwargs")),
    "PluginManager.close": (PluginManager.close, ("self",)),
    "PluginManager.plugins": (PluginManager.plugins, ()),
    "BaseAuthPlugin.authenticate": (BaseAuthPlugin.authenticate, ("self", "session")),
    "BaseTopicPlugin.topic_filtering": (BaseTopicPlugin.topic_filtering, ("self", "session", "topic", "action")),
    "BaseContext.__init__": (BaseContext.__init__, ("self",)),
}
# Attributes of amqtt's Session our plugins read: ours (gateway/mqtt/session.py) has the same.
SESSION_FIELDS = (
    "client_id",
    "username",
    "password",
    "remote_address",
    "remote_port",
    "ssl_object",
    "clean_session",
    "keep_alive",
    "will_flag",
    "will_topic",
    "will_message",
    "will_qos",
    "will_retain",
    "attributes",
)
ACTIONS = ("subscribe", "publish", "receive")
EVENTS = (
    "broker_pre_start",
    "broker_post_start",
    "broker_pre_shutdown",
    "broker_post_shutdown",
    "broker_client_connected",
    "broker_client_disconnected",
)
"""The broker events GatewayBroker fires for plugins."""


def as_plugin_session(session: object) -> Session:
    """Our session, as the `Session` a plugin's signature names: it carries every field in
    SESSION_FIELDS (the ones amqtt fills from the CONNECT), and plugins read nothing else."""
    return cast(Session, session)


__all__ = [
    "ACTIONS",
    "AMQTT_VERSION",
    "EVENTS",
    "SESSION_FIELDS",
    "USED",
    "Action",
    "BaseAuthPlugin",
    "BaseContext",
    "BaseTopicPlugin",
    "BrokerEvents",
    "PluginManager",
    "Session",
    "as_plugin_session",
]
