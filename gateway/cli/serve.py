"""`mqtt-gateway serve`: run a gateway node until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .client import chosen_data_dir
from .options import DataDirOption

if TYPE_CHECKING:  # imported when serving, not when the CLI starts (docs/api.md#cli)
    import asyncio

    from ..node.runtime import Gateway
    from ..node.settings import GatewaySettings

log = logging.getLogger("gateway.serve")

# `serve` and `check-config` take the same options, and settings_of turns them into settings for both.
ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML settings file")]
HostOption = Annotated[str | None, typer.Option("--host", help="address all listeners bind to")]
MqttPortOption = Annotated[int | None, typer.Option("--mqtt-port", help="0 = any free port")]
MqttsPortOption = Annotated[int | None, typer.Option("--mqtts-port", help="0 = any free port")]
ApiPortOption = Annotated[int | None, typer.Option("--api-port", help="0 = any free port")]
WsPortOption = Annotated[
    int | None, typer.Option("--ws-port", help="MQTT over WebSocket [default: off]; 0 = any free port")
]
WssPortOption = Annotated[
    int | None, typer.Option("--wss-port", help="MQTT over WebSocket and TLS [default: off]; 0 = any free port")
]


def settings_of(
    config: Path | None,
    data_dir: Path | None,
    host: str | None,
    mqtt_port: int | None,
    mqtts_port: int | None,
    api_port: int | None,
    ws_port: int | None = None,
    wss_port: int | None = None,
) -> GatewaySettings:
    """Defaults < the TOML file < GATEWAY_* < these flags. Raises SettingsError."""
    from ..node.settings import load_settings

    return load_settings(
        config,
        data_dir=data_dir,
        host=host,
        mqtt_port=mqtt_port,
        mqtts_port=mqtts_port,
        api_port=api_port,
        ws_port=ws_port,
        wss_port=wss_port,
    )


def serve(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    host: HostOption = None,
    mqtt_port: MqttPortOption = None,
    mqtts_port: MqttsPortOption = None,
    api_port: ApiPortOption = None,
    ws_port: WsPortOption = None,
    wss_port: WssPortOption = None,
) -> None:
    """Start the gateway: MQTT, MQTT over TLS (and over WebSocket, if asked) and the management API."""
    from ..node.datadir import DataDirInUse
    from ..node.settings import SettingsError
    from ..ops.logs import configure_logging

    try:
        settings = settings_of(
            config, chosen_data_dir(data_dir), host, mqtt_port, mqtts_port, api_port, ws_port, wss_port
        )
    except SettingsError as exc:
        typer.echo(f"mqtt-gateway: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings)
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
    import asyncio

    if event_loop != "uvloop":
        asyncio.run(main)
        return
    try:
        import uvloop
    except ImportError:
        main.close()
        raise RuntimeError("event_loop = uvloop needs the [fast] extra: pip install 'mqtt-gateway[fast]'") from None
    uvloop.run(main)


def _reload(gateway: Gateway) -> None:
    """SIGHUP: re-read the EPMX whitelist and the TLS certificate files; a broken file is logged and
    the old one stays. Sessions stay connected."""
    import asyncio

    from ..kp1.whitelist import WhitelistError

    try:
        gateway.reload_whitelist()
    except WhitelistError as exc:
        log.error("whitelist not reloaded: %s", exc)
    task = asyncio.ensure_future(gateway.reload_tls())
    task.add_done_callback(_tls_reloaded)


def _tls_reloaded(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("TLS certificate not reloaded, the old one stays: %s", exc)


async def _run(settings: GatewaySettings) -> None:
    import asyncio
    import signal

    from ..node.runtime import Gateway

    gateway = Gateway(settings)
    await gateway.start()
    host = settings.host
    ready = (
        f"mqtt-gateway ready: mqtt://{host}:{gateway.ports['mqtt']}"
        + (f"  mqtts://{host}:{gateway.ports['mqtts']}" if "mqtts" in gateway.ports else "")
        + (f" (CA: {gateway.tls.ca_path})" if gateway.tls and gateway.tls.ca_path and "mqtts" in gateway.ports else "")
        + "".join(
            f"  {name}://{host}:{gateway.ports[name]}{settings.ws_path}"
            for name in ("ws", "wss")
            if name in gateway.ports
        )
        + f"  API {'https' if settings.api_tls else 'http'}://{host}:{gateway.ports['api']}"
    )
    if settings.log_format == "json":  # every line JSON, and the admin token never in a shipped log
        if gateway.admin_token_created:
            log.warning("admin token created; read it from %s", settings.admin_token_path)
        log.info(ready)
    else:
        if gateway.admin_token_created:
            shown = f"Admin token (shown once; kept in {settings.admin_token_path}): {gateway.admin_token}"
            typer.echo(shown, err=True)
        typer.echo(ready, err=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, gateway)
    try:
        await stop.wait()
    finally:
        await gateway.stop()
