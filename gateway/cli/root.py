"""The options before any command: `--version`, and `--url`/`--token` to manage a gateway elsewhere."""

from typing import Annotated

import typer

from .client import set_remote


def _version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        typer.echo(f"mqtt-gateway {version('mqtt-gateway')}")
    except PackageNotFoundError:
        typer.echo("mqtt-gateway (not installed: no version)")
    raise typer.Exit()


def options(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_version, help="print the version and exit")
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="GATEWAY_URL",
            metavar="URL",
            help="the gateway's management API, e.g. http://10.0.0.5:8080 [default: the one in the data"
            " directory's ports.json]",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="GATEWAY_TOKEN",
            metavar="TOKEN",
            help="the admin token (the env var keeps it out of `ps`) [default: the data directory's admin-token;"
            " with --url, required]",
        ),
    ] = None,
) -> None:
    set_remote(url, token, url_from=_source(ctx, "url", "--url"), token_from=_source(ctx, "token", "--token"))


def _source(ctx: typer.Context, name: str, option: str) -> str:
    source = ctx.get_parameter_source(name)
    return f"GATEWAY_{name.upper()}" if source is not None and source.name == "ENVIRONMENT" else option
