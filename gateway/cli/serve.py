"""`mqtt-gateway serve`: run a gateway node until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from ..datadir import DataDirInUse
from ..settings import GatewaySettings, SettingsError, load_settings

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="data directory [default: ./gateway-data; env GATEWAY_DATA_DIR]"),
]
# `serve` and `check-config` take the same options, and settings_of turns them into settings for both.
ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML settings file")]
HostOption = Annotated[str | None, typer.Option("--host", help="address all listeners bind to")]
MqttPortOption = Annotated[int | None, typer.Option("--mqtt-port", help="0 = any free port")]
MqttsPortOption = Annotated[int | None, typer.Option("--mqtts-port", help="0 = any free port")]
ApiPortOption = Annotated[int | None, typer.Option("--api-port", help="0 = any free port")]


def settings_of(
    config: Path | None,
    data_dir: Path | None,
    host: str | None,
    mqtt_port: int | None,
    mqtts_port: int | None,
    api_port: int | None,
) -> GatewaySettings:
    """Defaults < the TOML file < GATEWAY_* < these flags. Raises SettingsError."""
    return load_settings(
        config, data_dir=data_dir, host=host, mqtt_port=mqtt_port, mqtts_port=mqtts_port, api_port=api_port
    )


def serve(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    host: HostOption = None,
    mqtt_port: MqttPortOption = None,
    mqtts_port: MqttsPortOption = None,
    api_port: ApiPortOption = None,
) -> None:
    """Start the gateway: MQTT, MQTT over TLS and the management API."""
    try:
        settings = settings_of(config, data_dir, host, mqtt_port, mqtts_port, api_port)
    except SettingsError as exc:
        typer.echo(f"mqtt-gateway: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # amqtt logs every connection at INFO; our own lines say what matters.
    quiet = max(logging.WARNING, logging.getLevelName(settings.log_level))
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(quiet)
    try:
        run_loop(_run(settings), settings.event_loop)
    except DataDirInUse as exc:  # refused before touching anything: the other gateway serves on
        typer.echo(f"mqtt-gateway: {exc}; stop it or use --data-dir", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # one clear line, not a traceback, for start-up failures
        typer.echo(f"mqtt-gateway: {exc}", err=True)
        raise typer.Exit(1) from None


def run_loop(main: Coroutine[Any, Any, None], event_loop: str = "asyncio") -> None:
    """asyncio's loop, or uvloop (`event_loop = "uvloop"`, the `[fast]` extra installed). Not uvloop by
    default: measured here it makes TLS handshakes 2.5-20x slower (docs/benchmarks.md)."""
    if event_loop != "uvloop":
        asyncio.run(main)
        return
    try:
        import uvloop
    except ImportError:
        main.close()
        raise RuntimeError("event_loop = uvloop needs the [fast] extra: pip install 'mqtt-gateway[fast]'") from None
    uvloop.run(main)


def _reload(gateway: object) -> None:
    """SIGHUP: re-read the EPMX whitelist; a broken file is logged and the old one stays."""
    from ..kp1.whitelist import WhitelistError

    try:
        gateway.reload_whitelist()  # type: ignore[attr-defined]
    except WhitelistError as exc:
        logging.getLogger("gateway").error("whitelist not reloaded: %s", exc)


async def _run(settings: GatewaySettings) -> None:
    from ..runtime import Gateway

    gateway = Gateway(settings)
    await gateway.start()
    if gateway.admin_token_created:
        typer.echo(f"Admin token (shown once; kept in {settings.admin_token_path}): {gateway.admin_token}", err=True)
    host = settings.host
    typer.echo(
        f"mqtt-gateway ready: mqtt://{host}:{gateway.ports['mqtt']}"
        + (f"  mqtts://{host}:{gateway.ports['mqtts']} (CA: {gateway.tls.ca_path})" if gateway.tls else "")
        + f"  API http://{host}:{gateway.ports['api']}",
        err=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, gateway)
    try:
        await stop.wait()
    finally:
        await gateway.stop()
