"""The CLI's shape, without a gateway: every command and option has a help line, flags show no
metavar, and `--help` (root or subcommand) imports none of the heavy modules (issue 11 point 6)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from gateway.cli import app
from pki.templates import DEFAULT_AUTH_ID_TEMPLATE, DEFAULT_DEVICE_ID_TEMPLATE

HEAVY = [
    "httpx",
    "pydantic",
    "pydantic_settings",
    "gateway.node.settings",
    "gateway.node.runtime",
    "cryptography",
    "amqtt",
]
HEAVY += ["fastapi", "rich", "asyncio", "typer.rich_utils", "typer._adapters", "pki.devca"]
OTHER_COMMANDS = ["gateway.cli.credentials", "gateway.cli.pki", "gateway.cli.groups", "gateway.cli.filters"]


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """(path, command, its context) for the root and every group and command under it (the root's
    subgroups are built as they are listed: gateway/cli/typer_group.py)."""
    ctx = typer.Context(command, info_name=" ".join(path) or "mqtt-gateway")
    yield path, command, ctx
    for name in command.list_commands(ctx) if hasattr(command, "list_commands") else []:
        yield from walk(command.get_command(ctx, name), (*path, name))


COMMANDS = list(walk(typer.main.get_command(app)))


def test_every_command_and_option_has_a_help_line() -> None:
    missing = []
    for path, command, ctx in COMMANDS:
        if not (command.help or "").strip():
            missing.append(" ".join(path) or "(root)")
        for param in command.get_params(ctx):
            if not (param.help or "").strip():
                missing.append(f"{' '.join(path)} {param.opts[0]}")
    assert missing == []
    assert len(COMMANDS) > 80


def test_flags_show_no_metavar_and_no_option_shows_a_python_type() -> None:
    """Typer renders `<bool>` for a flag in rich mode and `<list[str]>` for a list option."""
    odd = []
    for path, command, ctx in COMMANDS:
        for param in command.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or param.param_type_name != "option":
                continue
            shown = record[0]
            flag_with_metavar = param.is_flag and not all(w.startswith("-") for w in re.split(r"[ ,/]+", shown) if w)
            if flag_with_metavar or re.search(r"<(bool|list\[)", shown):
                odd.append(f"{' '.join(path)}: {shown}")
    assert odd == []


def test_help_renders_for_every_command_without_bool_metavars() -> None:
    runner = CliRunner()
    for path, _command, _ctx in COMMANDS:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output and "Usage:" in result.output, path


def test_command_annotations_are_not_strings() -> None:
    """Typer evals string annotations (`from __future__ import annotations`) of every command at
    start-up; the modules of the ~90 subcommands do without (gateway/cli/typer_group.py). A few
    top-level commands (serve) may keep them."""
    import inspect

    stringly = []
    for path, command, _ctx in COMMANDS:
        if len(path) < 2:
            continue
        callback = getattr(command.callback, "__wrapped__", command.callback)
        if callback is not None and any(isinstance(a, str) for a in inspect.get_annotations(callback).values()):
            stringly.append(" ".join(path) or "(root)")
    assert stringly == []


def test_ca_add_help_names_the_gateways_default_templates() -> None:
    """The CLI leaves them to the API (no cryptography import for them); its help must not drift."""
    (ca_add,) = [command for path, command, _ctx in COMMANDS if path == ("ca", "add")]
    helps = {param.name: param.help for param in ca_add.params}
    assert helps["device_id_template"].endswith(f"[default: {DEFAULT_DEVICE_ID_TEMPLATE}]")
    assert helps["auth_id_template"].endswith(f"[default: {DEFAULT_AUTH_ID_TEMPLATE}]")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["tenant", "list", "--help"],
        ["device", "update", "--help"],
        ["tenant"],
        ["tenant", "list", "-h"],
        ["--data-dir", "elsewhere", "--url", "http://127.0.0.1:1", "tenant", "list", "--url", "http://h", "-h"],
    ],
)
def test_help_and_version_import_no_heavy_module(args: list[str]) -> None:
    """Structural, not timed: what `mqtt-gateway ARGS` has imported when it exits. A subcommand's
    help imports its own command module only (the others' commands are neither imported nor built)."""
    unwanted = HEAVY if args == ["--help"] else HEAVY + OTHER_COMMANDS
    probe = (
        "import sys, json\n"
        f"sys.argv = ['mqtt-gateway', *{args!r}]\n"
        "from gateway.cli import main\n"
        "try:\n    main()\n"
        "except SystemExit:\n    pass\n"
        f"print(json.dumps([m for m in {unwanted!r} if m in sys.modules]), file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert json.loads(r.stderr.strip().splitlines()[-1]) == [], r.stderr
    assert "Usage:" in r.stdout + r.stderr or r.stdout.startswith("mqtt-gateway ")


def test_importtime_of_help_lists_no_heavy_module() -> None:
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "gateway", "--help"], capture_output=True, text=True, timeout=60
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert r.returncode == 0 and "gateway.cli" in imported
    assert sorted(imported & set(HEAVY)) == []


def test_version_is_the_installed_packages() -> None:
    from importlib.metadata import version

    r = subprocess.run([sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"mqtt-gateway {version('mqtt-gateway')}"
