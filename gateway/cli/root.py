"""The common options: `--version`, `--data-dir`, and `--url`/`--token` to manage a gateway elsewhere.

`--data-dir`, `--url` and `--token` may stand before the command (`mqtt-gateway --data-dir X tenant
list`) or after it (`mqtt-gateway tenant list --url U --token T`); given on both sides, the one after
the command wins. A command that talks to no API (serve, check-config, pki ...) takes no --url/--token
after it, nor does `token issue`, whose own --token is the token to issue.
"""

from functools import cache
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main

from .client import remote, set_remote

HELP_OPTIONS = ["-h", "--help"]
LOCAL_COMMANDS = frozenset({"serve", "check-config", "server-cert"})
"""Commands with a --data-dir that read or write its files themselves: --url/--token mean nothing to them."""


def _version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        typer.echo(f"mqtt-gateway {version('mqtt-gateway')}")
    except PackageNotFoundError:
        typer.echo("mqtt-gateway (not installed: no version)")
    raise typer.Exit()


URL_HELP = (
    "the gateway's management API, e.g. http://10.0.0.5:8080 [default: the one in the data directory's ports.json]"
)
TOKEN_HELP = (
    "the admin token (the env var keeps it out of `ps`) [default: the data directory's admin-token; with --url,"
    " required]"
)

AFTER_URL_HELP = "the gateway's management API (as `mqtt-gateway --url URL ...`; env GATEWAY_URL)"
AFTER_TOKEN_HELP = "the admin token, needed with --url (as `mqtt-gateway --token TOKEN ...`; env GATEWAY_TOKEN)"


def options(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_version, help="print the version and exit")
    ] = False,
    url: Annotated[str | None, typer.Option("--url", envvar="GATEWAY_URL", metavar="URL", help=URL_HELP)] = None,
    token: Annotated[
        str | None, typer.Option("--token", envvar="GATEWAY_TOKEN", metavar="TOKEN", help=TOKEN_HELP)
    ] = None,
    data_dir: Annotated[
        str | None,  # as parsed, not through typer's Path conversion (gateway/cli/typer_group.py)
        typer.Option(
            "--data-dir",
            metavar="DIR",
            help="data directory of the gateway to manage or serve (a command's own --data-dir wins)"
            " [default: ./gateway-data; env GATEWAY_DATA_DIR]",
        ),
    ] = None,
) -> None:
    set_remote(
        url,
        token,
        url_from=_source(ctx, "url", "--url"),
        token_from=_source(ctx, "token", "--token"),
        data_dir=Path(data_dir) if data_dir is not None else None,
    )


def _source(ctx: typer.Context, name: str, option: str) -> str:
    source = ctx.get_parameter_source(name)
    return f"GATEWAY_{name.upper()}" if source is not None and source.name == "ENVIRONMENT" else option


def add_common_options(command: Any) -> None:
    """`--url` and `--token` after a command that talks to the API (one with a --data-dir): options
    that overrule the root's values when given (and are not passed to the command's function)."""
    names = {param.name for param in command.params}
    flags = {flag for param in command.params for flag in param.opts}
    if "data_dir" not in names or flags & {"--url", "--token"} or command.name in LOCAL_COMMANDS:
        return  # `token issue --token` is the device's token: there, both stay before the command
    command.params.extend(_after_options())


def _given(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> None:
    if value is not None and param.name is not None:
        setattr(remote, param.name, value)
        setattr(remote, f"{param.name}_from", f"--{param.name}")


def _after(
    url: Annotated[
        str | None,
        typer.Option("--url", metavar="URL", expose_value=False, callback=_given, help=AFTER_URL_HELP),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", metavar="TOKEN", expose_value=False, callback=_given, help=AFTER_TOKEN_HELP),
    ] = None,
) -> None:
    """Carries the two options; never called."""


@cache
def _after_options() -> list[Any]:
    carrier = typer.Typer(add_completion=False, rich_markup_mode=None)
    carrier.command()(_after)
    params: list[Any] = typer.main.get_command(carrier).params
    return params
