"""The seam to amqtt: one module lists what the gateway uses, and an upgrade that changes it fails here.

gateway/mqtt/amqtt_api.py names the amqtt version we build on, the callables we call with the
parameters we pass, and the Session fields our plugins read. No other gateway module imports amqtt,
subclasses its Broker or protocol handlers, or reaches for a private amqtt name.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import inspect
from pathlib import Path

import pytest
from amqtt.session import Session

from gateway.mqtt import amqtt_api
from gateway.mqtt.connect_packet import ConnectFields
from gateway.mqtt.session import ClientSession

GATEWAY = Path(__file__).parent.parent / "gateway"


def test_the_installed_amqtt_is_the_one_we_build_on() -> None:
    assert importlib.metadata.version("amqtt") == amqtt_api.AMQTT_VERSION


@pytest.mark.parametrize("name", sorted(amqtt_api.USED))
def test_each_amqtt_callable_we_use_keeps_its_parameters(name: str) -> None:
    function, expected = amqtt_api.USED[name]
    if isinstance(function, property):
        assert function.fget is not None  # a property we read
        return
    assert callable(function)
    assert tuple(inspect.signature(function).parameters) == expected


def test_amqtt_session_still_has_the_fields_our_plugins_read_and_ours_has_them_too() -> None:
    stock = Session()
    ours = ClientSession.of(ConnectFields("c", True, 60, "u", "p", None, None, 0, False), ("127.0.0.1", 1), None)
    for field in amqtt_api.SESSION_FIELDS:
        assert hasattr(stock, field), f"amqtt's Session lost {field}"
        assert hasattr(ours, field), f"our ClientSession lacks {field}"
    assert {f.name for f in dataclasses.fields(ClientSession)} >= set(amqtt_api.SESSION_FIELDS)


def test_actions_and_events_keep_their_names() -> None:
    assert tuple(a.value for a in amqtt_api.Action) == amqtt_api.ACTIONS
    values = {e.value for e in amqtt_api.BrokerEvents}
    assert set(amqtt_api.EVENTS) <= values
    assert {"broker_client_connected", "broker_client_disconnected"} <= values


def _modules() -> list[Path]:
    return [p for p in GATEWAY.rglob("*.py") if p != GATEWAY / "mqtt" / "amqtt_api.py"]


def test_no_other_gateway_module_imports_amqtt() -> None:
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(GATEWAY)}: {n}" for n in names if n.split(".")[0] == "amqtt"]
    assert offenders == []


def test_nothing_private_of_amqtt_is_touched() -> None:
    """What amqtt_api exports is public; code that reaches through it for `_name` would show here."""
    exported = set(amqtt_api.__all__)
    offenders = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in exported
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                offenders.append(f"{path.relative_to(GATEWAY)}: {node.value.id}.{node.attr}")
            if isinstance(node, ast.Attribute) and node.attr in ("_broker_instance", "_sessions", "_servers"):
                offenders.append(f"{path.relative_to(GATEWAY)}: .{node.attr}")
    assert offenders == []
    assert all(not name.startswith("_") for name in exported)
