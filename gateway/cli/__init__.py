"""The `mqtt-gateway` command. Start-up imports typer and the modules of the commands used only:
httpx, rich, pydantic, the settings and the runtime are imported by the commands that use them
(gateway/cli/typer_group.py; tests/test_cli_help.py)."""

from __future__ import annotations

import typer

from . import check_config, operations, root, serve
from .typer_group import lazy_root

SUBGROUPS = {  # imported and built when used
    "tenant": ".admin:tenant",
    "device": ".admin:device",
    "token": ".credentials:token",
    "password": ".credentials:password",
    "certificate": ".credentials:certificate",
    "service-account": ".credentials:service_account",
    "group": ".groups:group",
    "filter": ".filters:endpoint_filter",
    "ca": ".pki:ca",
    "pki": ".pki:pki",
    "metadata": ".metadata:metadata",
    "data": ".messaging:data",
    "command": ".messaging:command",
    "import-job": ".imports:import_job",
    "whitelist": ".operations:whitelist",
}

app = typer.Typer(
    name="mqtt-gateway",
    help="MQTT device gateway: serve devices, and manage tenants, devices and credentials.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's markdown renderer costs ~0.2 s of start-up
    callback=root.options,
    cls=lazy_root(SUBGROUPS),
    context_settings={"help_option_names": root.HELP_OPTIONS},
)
app.command("serve")(serve.serve)
app.command("check-config")(check_config.check_config)
operations.register(app)


def main() -> None:
    app(prog_name="mqtt-gateway")
