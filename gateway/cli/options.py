"""Arguments and options many commands share, each with its help line and metavar."""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..kp1.payload import PayloadError, parse_json
from .client import fail

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        metavar="DIR",
        help="data directory of the gateway to manage (its ports.json and admin-token) [default: ./gateway-data;"
        " env GATEWAY_DATA_DIR]",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print the API's JSON instead of a table")]
YesOption = Annotated[
    bool, typer.Option("--yes", "-y", help="do not ask for confirmation (needed when not on a terminal)")
]
Tenant = Annotated[str, typer.Argument(metavar="TENANT", help="the tenant's id")]
Device = Annotated[str, typer.Argument(metavar="DEVICE", help="the device's id")]
AttrOption = Annotated[
    list[str] | None, typer.Option("--attr", metavar="KEY=VALUE", help="an attribute; repeat for more")
]


def pairs(values: list[str], option: str) -> dict[str, str]:
    """`KEY=VALUE` strings as a dict; anything else is a usage error (exit 2)."""
    out = {}
    for pair in values:
        key, sep, value = pair.partition("=")
        if not sep:
            raise fail(f"{option} wants key=value, got {pair!r}", 2)
        out[key] = value
    return out


def json_argument(text: str, name: str) -> Any:
    """A JSON argument, or @FILE holding it, held to the API's rules (no duplicate keys, NaN...)."""
    try:
        raw = Path(text[1:]).read_bytes() if text.startswith("@") else text.encode()
        return parse_json(raw)
    except (OSError, PayloadError) as exc:
        raise fail(f"{name}: {exc}") from None


def confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; elsewhere only --yes goes on (a script must never hang on a prompt)."""
    if yes:
        return
    if sys.stdin is None or not sys.stdin.isatty():
        raise fail(f"{question} Not confirmed: pass --yes (stdin is not a terminal)", 2)
    if not typer.confirm(question, default=False):
        raise fail("not confirmed; nothing deleted", 1)
