"""The command groups of `mqtt-gateway`: start-up builds and imports only what the command line uses.

- Typer (>= 0.20) runs every option value through a pydantic validator, pydantic imported on first
  use: ~0.15 s. A group's options are processed before its subcommand, even when the subcommand is
  only asked for `--help`, and every group has a `--help` (None when not given: validated). A group
  here takes its few options as parsed (`--help`, the root's `--url`, `--token` and `--data-dir`:
  flags and strings need no coercion), so `mqtt-gateway tenant list --help` never imports pydantic.
- Every command a group hands out gets the common options that may follow it (`--url`, `--token`:
  gateway/cli/root.py), and `-h` is `--help` everywhere (the root's context passes it down).
- The root imports a subgroup's module and builds its commands when that subgroup is used: `--help`
  lists the subgroups by their help line without building their ~90 commands (~60 ms).
- The command modules do without `from __future__ import annotations`: typer would `eval` every
  string annotation of a command when it builds it.
"""

from importlib import import_module
from typing import Any, ClassVar

import typer
import typer.main
from typer.core import TyperGroup

from .root import HELP_OPTIONS, add_common_options

AS_PARSED = frozenset({"help", "url", "token", "data_dir"})


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)
        for param in params:
            if param.name in AS_PARSED and "process_value" not in vars(param):
                param.process_value = _as_parsed(param)
        return params

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None and not isinstance(command, TyperGroup):
            add_common_options(command)
        return command


def _as_parsed(param: Any) -> Any:
    def process_value(ctx: Any, value: Any) -> Any:
        return param.callback(ctx, param, value) if param.callback is not None else value

    return process_value


def subgroup(name: str, help: str) -> typer.Typer:
    """A sub-group: `mqtt-gateway NAME ...`, its help shown when called without a subcommand."""
    return typer.Typer(
        name=name,
        help=help,
        no_args_is_help=True,
        cls=Group,
        rich_markup_mode=None,
        add_completion=False,
        context_settings={"help_option_names": HELP_OPTIONS},
    )


class LazyRoot(Group):
    """The root. `SUBGROUPS` maps a subgroup's name to the `module:attribute` of its typer.Typer."""

    SUBGROUPS: ClassVar[dict[str, str]] = {}

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(name for name in self.SUBGROUPS if name not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in self.SUBGROUPS:
            self.commands[cmd_name] = typer.main.get_group(self._typer(cmd_name))
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """As typer's, but a subgroup not built yet is listed with its Typer's help line."""
        names = [name for name in self.list_commands(ctx) if not getattr(self.commands.get(name), "hidden", False)]
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            built = self.commands.get(name)
            help = built.get_short_help_str(limit) if built is not None else _short(self._help(name), limit)
            rows.append((name, help))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def _typer(self, name: str) -> typer.Typer:
        module, _, attribute = self.SUBGROUPS[name].partition(":")
        found: typer.Typer = getattr(import_module(module, __package__), attribute)
        return found

    def _help(self, name: str) -> str:
        help = self._typer(name).info.help
        return help if isinstance(help, str) else ""


def _short(help: str, limit: int) -> str:
    line = help.strip().splitlines()[0] if help.strip() else ""
    return line if len(line) <= limit else line[: max(limit - 3, 0)].rsplit(" ", 1)[0] + "..."


def lazy_root(subgroups: dict[str, str]) -> type[LazyRoot]:
    return type("Root", (LazyRoot,), {"SUBGROUPS": subgroups})
