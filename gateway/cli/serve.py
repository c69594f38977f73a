"""`mqtt-gateway serve`: run a gateway node until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .options import DataDirOption

if TYPE_CHECKING:  # imported when serving, not when the CLI starts (docs/api.md#cli)
    from ..settings import GatewaySettings

log = logging.getLogger("gateway.serve")


def serve(
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file")] = None,
    data_dir: DataDirOption = None,
    host: Annotated[str | None, typer.Option("--host", help="address all listeners bind to")] = None,
    mqtt_port: Annotated[int | None, typer.Option("--mqtt-port", help="0 = any free port")] = None,
    mqtts_port: Annotated[int | None, typer.Option("--mqtts-port", help="0 = any free port")] = None,
    api_port: Annotated[int | None, typer.Option("--api-port", help="0 = any free port")] = None,
) -> None:
    """Start the gateway: MQTT, MQTT over TLS and the management API."""
    from ..datadir import DataDirInUse
    from ..logs import configure_logging
    from ..settings import SettingsError, load_settings

    try:
        settings = load_settings(
            config, data_dir=data_dir, host=host, mqtt_port=mqtt_port, mqtts_port=mqtts_port, api_port=api_port
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


def _reload(gateway: object) -> None:
    """SIGHUP: re-read the EPMX whitelist; a broken file is logged and the old one stays."""
    from ..kp1.whitelist import WhitelistError

    try:
        gateway.reload_whitelist()  # type: ignore[attr-defined]
    except WhitelistError as exc:
        logging.getLogger("gateway").error("whitelist not reloaded: %s", exc)


async def _run(settings: GatewaySettings) -> None:
    import asyncio
    import signal

    from ..runtime import Gateway

    gateway = Gateway(settings)
    await gateway.start()
    host = settings.host
    ready = (
        f"mqtt-gateway ready: mqtt://{host}:{gateway.ports['mqtt']}"
        + (f"  mqtts://{host}:{gateway.ports['mqtts']} (CA: {gateway.tls.ca_path})" if gateway.tls else "")
        + f"  API http://{host}:{gateway.ports['api']}"
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
