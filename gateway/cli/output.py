"""What commands print: the API's JSON with `--json`, else a table.

Tables go through rich (imported on first use, not at start-up). On a terminal long cells wrap
(folded, never cut with an ellipsis); piped, every row is one line as wide as it needs, so ids and
tokens reach `grep`/`awk` whole. Cells are plain text: a value that looks like rich markup
(`[red]`, `[/]`) is printed as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import typer

from .client import run


def show(data: Any, as_json: bool, columns: list[str] | None = None) -> None:
    """`data` (an object or a list of them) as JSON, or as a table of `columns`."""
    if as_json or columns is None:
        typer.echo(json.dumps(data, indent=2))
        return
    table(data if isinstance(data, list) else [data], columns)


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Column, Table
    from rich.text import Text

    cells = [[Text(cell(row.get(c))) for c in columns] for row in rows]
    console = Console(highlight=False)
    piped = not console.is_terminal
    if piped:  # wide enough for the longest row: nothing wraps, nothing is cut
        widest = [max([len(c), *(r[i].cell_len for r in cells)]) for i, c in enumerate(columns)]
        console = Console(highlight=False, width=max(80, sum(widest) + 3 * len(columns) + 1))
    grid = Table(*(Column(c, overflow="fold", no_wrap=piped) for c in columns))
    for row in cells:
        grid.add_row(*row)
    console.print(grid)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def pages(
    data_dir: Path | None,
    path: str,
    params: dict[str, Any],
    key: str,
    columns: list[str],
    after: str | int | None,
    all_pages: bool,
    as_json: bool,
) -> None:
    """A paged list: one page (JSON as the API has it), or with --all every page (JSON: one array a line)."""
    cursor: str | int | None = after
    while True:
        query = {k: v for k, v in {**params, "after": cursor}.items() if v is not None}
        page = run(data_dir, "GET", f"{path}?{urlencode(query)}")
        if as_json:
            typer.echo(json.dumps(page[key] if all_pages else page, indent=None if all_pages else 2))
        else:
            show(page[key], False, columns)
        cursor = page["next"]
        if not all_pages or cursor is None:
            break
    if not as_json:
        typer.echo(f"next: {cursor}" if cursor else "next: - (last page)")
