"""`mqtt-gateway check-config`: the settings `serve` would start with, checked without starting it."""

from __future__ import annotations

from typing import NoReturn

import typer

from .client import chosen_data_dir
from .options import DataDirOption
from .serve import (
    ApiPortOption,
    ConfigOption,
    HostOption,
    MqttPortOption,
    MqttsPortOption,
    WsPortOption,
    WssPortOption,
    settings_of,
)


def check_config(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    host: HostOption = None,
    mqtt_port: MqttPortOption = None,
    mqtts_port: MqttsPortOption = None,
    api_port: ApiPortOption = None,
    ws_port: WsPortOption = None,
    wss_port: WssPortOption = None,
) -> None:
    """Check the settings serve would run with (same options, same GATEWAY_* variables) and the files
    they name; print them as TOML. Exit 0 when serve could start with them, 1 with one line per problem."""
    from ..node.config_check import as_toml, certificate_warning, file_problems  # not at CLI start-up
    from ..node.settings import SettingsError

    try:
        settings = settings_of(
            config, chosen_data_dir(data_dir), host, mqtt_port, mqtts_port, api_port, ws_port, wss_port
        )
    except SettingsError as exc:
        _fail(exc.problems)
    problems = file_problems(settings)
    if problems:
        _fail(problems)
    if (warning := certificate_warning(settings)) is not None:
        typer.echo(f"mqtt-gateway: warning: {warning}", err=True)
    sources = " < ".join(["defaults", *([str(config)] if config is not None else []), "GATEWAY_*", "flags"])
    typer.echo(f"# mqtt-gateway check-config: valid. The effective settings ({sources}):")
    typer.echo(as_toml(settings), nl=False)


def _fail(problems: list[str]) -> NoReturn:
    for problem in problems:
        typer.echo(f"mqtt-gateway: {problem}", err=True)
    raise typer.Exit(1)
