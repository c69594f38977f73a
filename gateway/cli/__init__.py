"""The `mqtt-gateway` command."""

from __future__ import annotations

import typer

from . import admin, check_config, filters, groups, imports, pki, serve

app = typer.Typer(
    name="mqtt-gateway",
    help="MQTT device gateway: serve devices, and manage tenants, devices and credentials.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.command("check-config")(check_config.check_config)
imports.register(admin.device)
for sub in [*admin.groups(), groups.group, filters.endpoint_filter, pki.ca, pki.pki]:
    app.add_typer(sub)


def main() -> None:
    app()
